"""Checkpoints of the papers' code, mapped onto stcorr's backbone (torchvision key names).

Each reference repository saves its ResNet under its own names and feeds it its own input, so
an import maps the names and records the input contract (:mod:`stcorr.models.contract`): the
model is then evaluated as its authors evaluated it (docs/methods.md 1.4, 2.1, 2.3, 3.1).

| format      | encoder keys (after ``state_dict``/``model``, ``module.``) | input, preset        |
|-------------|------------------------------------------------------------|----------------------|
| crw         | ``encoder.model.*`` (videowalk ``pretrained.pth``)         | RGB, ``crw``         |
| stt         | mmcv ``backbone.*``: ``conv1.conv/bn``, ``convN.conv/bn``, | Lab, ``eval_d8`` or  |
|             | ``downsample.conv/bn``                                     | ``eval_d4``          |
| vfs         | the same mmcv layout (VFS ``convert_to_pretrained.py``)    | RGB, ``eval_pool_d8``|
| moco        | ``encoder_q.*`` without ``fc*`` (facebookresearch/moco)    | RGB, ``eval_pool_d8``|
| sfc         | ``online_encoder.*`` (SFC ``pretrained_fc.pth``)           | RGB, ``eval_pool_d8``|
| torchvision | ``conv1.weight``, ``layer1.0.*`` ... without ``fc.*``      | RGB, ``eval_pool_d8``|

Everything else in the file is left out: CRW's ``selfsim_fc``, STT's teacher ``backbone_t``,
VFS's ``img_head``, MoCo's ``encoder_k`` and queue, SFC's target encoder and projectors.
RGB means ImageNet mean/std; Lab means (50, 0, 0) / (50, 127, 127) (STT ``base_data.py``).
``eval_pool_d8`` is a standard ResNet with layer3's stride removed: how VFS (``test_cfg``
strides (1, 2, 1, 1)), SFC and CRW (``modify()`` on ImageNet/MoCo nets) evaluate them. VFS feeds
RGB (its configs' ``img_norm_cfg``), not Lab, although it shares STT's mmcv layout; the two
cannot be told apart by the backbone's keys, only by what else the file holds (``backbone_t``:
STT's teacher; ``img_head``: VFS's SimSiam head). The protocol each paper evaluates with (CRW's
for crw, moco, sfc and torchvision nets, as the CRW paper evaluates its baselines; STT's for stt
and vfs, whose trackers are the same code) is recorded too.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import pickle
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stcorr.models.contract import CONTRACT_KEY, ModelContract, unpack
from stcorr.models.resnet import CHANNELS, detect_arch

FORMATS = ("crw", "stt", "vfs", "moco", "sfc", "torchvision")
# Plain-data classes the reference repos pickle next to the weights; allowed in a weights-only
# load (CRW's train.py saves its argparse ``args`` in every checkpoint).
SAFE_EXTRAS: tuple[type, ...] = (argparse.Namespace,)
_PREFIX = {"crw": "encoder.model.", "moco": "encoder_q.", "sfc": "online_encoder.",
           "stt": "backbone.", "vfs": "backbone."}
_MMCV = re.compile(r"^(?:(?P<stem>conv1)|(?P<layer>layer\d+\.\d+)\.(?P<module>conv\d|downsample))"
                   r"\.(?P<kind>conv|bn)\.(?P<tail>\w+)$")


class ImportFormatError(ValueError):
    """The file is not a checkpoint of a known layout, or does not map onto a ResNet-18/50."""


@dataclass(frozen=True)
class Imported:
    """A foreign checkpoint in stcorr's terms.

    Attributes:
        format: one of ``FORMATS``.
        state: the full encoder (layer1..layer4) in torchvision key names, no ``fc``.
        contract: how the encoder is fed and evaluated.
        dropped: how many tensors of the file were not part of the encoder (heads, teacher...).
    """

    format: str
    state: dict[str, Tensor]
    contract: ModelContract
    dropped: int


def import_checkpoint(path: Path, fmt: str = "auto", *, arch: str | None = None, stride: int = 8,
                      trust: bool = False) -> Imported:
    """Read ``path``, detect or check its format, map it and build its contract.

    Args:
        path: the checkpoint file.
        fmt: ``"auto"`` (from the keys) or one of ``FORMATS``.
        arch: expected ``"resnet18"``/``"resnet50"``; None takes the one the keys hold.
        stride: 8, or 4 for STT's stride-4 models (``eval_d4``).
        trust: allow full unpickling when a weights-only load is refused (can run code).

    Raises:
        FileNotFoundError: no such file.
        ImportFormatError: unknown layout, missing or unexpected keys, another architecture.
    """
    raw = read_checkpoint(path, trust=trust)
    if isinstance(raw.get(CONTRACT_KEY), Mapping):
        raise ImportFormatError(f"{path}: already an stcorr encoder with its contract; use it as it is")
    tensors = _tensors(raw, str(path))
    found = detect_format(tensors, str(path)) if fmt == "auto" else fmt
    if found not in FORMATS:
        raise ImportFormatError(f"--format {fmt!r}: expected auto or one of {', '.join(FORMATS)}")
    state = to_torchvision(tensors, found, str(path))
    held = _arch(state, str(path), found)
    if arch is not None and arch != held:
        raise ImportFormatError(f"{path}: holds a {held} ({found} layout); expected a {arch}")
    check_keys(state, held, f"{path} ({found} layout)")
    return Imported(found, state, contract_for(found, held, stride), len(tensors) - len(state))


def read_encoder(path: Path, stored: ModelContract | None = None) -> tuple[dict[str, Tensor], ModelContract]:
    """An encoder file of any origin as (torchvision state dict, contract): stcorr's own
    (contract in the file, else ``stored``, e.g. from registry tags) or a paper's checkpoint.

    Raises:
        ImportFormatError: a foreign file of no known layout (see ``import_checkpoint``).
    """
    raw = read_checkpoint(path)
    state, contract = unpack(raw, str(path))
    contract = contract or stored
    if contract is not None:
        return state, contract
    imported = import_checkpoint(path)
    return imported.state, imported.contract


def read_checkpoint(path: Path, *, trust: bool = False) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)`` allowing ``SAFE_EXTRAS``; full unpickling only if trusted.

    Raises:
        FileNotFoundError: no such file.
        ImportFormatError: unreadable, not a dict, or holds classes a weights-only load refuses
            (and ``trust`` is off).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    try:
        obj = _load(data, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = ", ".join(re.findall(r"GLOBAL ([\w.]+)", str(err))[:3])
        if not refused:  # not a class it refused: the bytes are no pickle at all
            raise ImportFormatError(f"{path}: cannot read checkpoint (corrupt or not a torch.save "
                                    f"file); expected a torch.save file") from None
        if not trust:
            raise ImportFormatError(f"{path}: a weights-only load refuses {refused}; pass --trust-pickle "
                                    f"to unpickle it fully (only for a file you trust)") from None
        _note(f"{path}: unpickled fully (--trust-pickle): a weights-only load refuses {refused}")
        obj = _load(data, weights_only=False)
    except Exception as err:  # zip/pickle errors vary with the damage; report one line
        raise ImportFormatError(f"{path}: cannot read checkpoint ({type(err).__name__}); "
                                f"expected a torch.save file") from err
    if not isinstance(obj, Mapping):
        raise ImportFormatError(f"{path}: holds a {type(obj).__name__}; expected a checkpoint dict")
    return obj


def _load(data: bytes, *, weights_only: bool) -> Any:
    with torch.serialization.safe_globals(list(SAFE_EXTRAS)):
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)


def detect_format(tensors: Mapping[str, Tensor], source: str) -> str:
    """The format whose key layout ``tensors`` has (``module.`` already stripped).

    Raises:
        ImportFormatError: an mmcv backbone without STT's teacher or VFS's head (ambiguous), or
            no known layout.
    """
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in tensors)

    for fmt in ("crw", "sfc", "moco"):
        if has(_PREFIX[fmt]):
            return fmt
    if "backbone.conv1.conv.weight" in tensors:
        if has("backbone_t."):
            return "stt"
        if has("img_head."):
            return "vfs"
        raise ImportFormatError(f"{source}: an mmcv ResNet (backbone.conv1.conv) as STT and VFS save "
                                f"it, without a teacher or head to tell which; STT feeds Lab, VFS RGB: "
                                f"pass --format stt or --format vfs")
    if "conv1.weight" in tensors and has("layer1."):
        return "torchvision"
    raise ImportFormatError(f"{source}: unknown checkpoint layout (first keys {list(tensors)[:3]}); "
                            f"expected one of {', '.join(FORMATS)}")


def to_torchvision(tensors: Mapping[str, Tensor], fmt: str, source: str) -> dict[str, Tensor]:
    """The encoder's tensors under torchvision names; heads, teacher, ``fc`` left out.

    Raises:
        ImportFormatError: the file has no key of the format's layout.
    """
    prefix = _PREFIX.get(fmt, "")
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not own:
        raise ImportFormatError(f"{source}: no {prefix}* keys; not a {fmt} checkpoint "
                                f"(first keys {list(tensors)[:3]})")
    if fmt in ("stt", "vfs"):
        own = {_mmcv_name(k): v for k, v in own.items()}
    return {k: v for k, v in own.items() if not k.startswith("fc.")}


def _mmcv_name(key: str) -> str:
    """mmcv ``ConvModule`` names -> torchvision, as VFS's ``convert_to_pretrained.py``; keys
    that do not match come back unchanged (and are reported as unexpected)."""
    m = _MMCV.match(key)
    if m is None:
        return key
    kind, tail = m["kind"], m["tail"]
    if m["stem"]:
        return f"{'conv1' if kind == 'conv' else 'bn1'}.{tail}"
    if m["module"] == "downsample":
        return f"{m['layer']}.downsample.{0 if kind == 'conv' else 1}.{tail}"
    index = m["module"][-1]
    return f"{m['layer']}.{'conv' if kind == 'conv' else 'bn'}{index}.{tail}"


def check_keys(state: Mapping[str, Tensor], arch: str, source: str) -> None:
    """Every tensor of a torchvision ``arch`` trunk (layer1..layer4, no fc), nothing else.

    Raises:
        ImportFormatError: one line naming the first missing and first unexpected key, or the
            first key whose shape differs.
    """
    expected = _trunk_shapes(arch)
    required = [k for k in expected if not k.endswith("num_batches_tracked")]
    missing = next((k for k in required if k not in state), None)
    unexpected = next((k for k in state if k not in expected), None)
    if missing or unexpected:
        raise ImportFormatError(f"{source}: does not map onto a {arch}: first missing key {missing}, "
                                f"first unexpected key {unexpected}")
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            raise ImportFormatError(f"{source}: {key} has shape {tuple(state[key].shape)}; "
                                    f"a {arch} has {shape}")


def contract_for(fmt: str, arch: str, stride: int = 8) -> ModelContract:
    """The input contract and preferred protocol of a ``fmt`` encoder (module docstring table).

    Raises:
        ImportFormatError: stride 4 asked for a format with no stride-4 preset (all but STT).
    """
    if stride not in (8, 4) or (stride == 4 and fmt != "stt"):
        raise ImportFormatError(f"--stride {stride}: only STT checkpoints have a stride-4 preset "
                                f"(eval_d4); {fmt} is evaluated at stride 8")
    if fmt == "stt":
        preset = "eval_d8" if stride == 8 else "eval_d4"
        return ModelContract("stt", "lab", "lab", arch, preset, stride, "stt_student", "stt")
    objective = {"torchvision": "supervised"}.get(fmt, fmt)
    rgb = ModelContract(objective, "rgb", "imagenet", arch, "eval_pool_d8", 8, "stt_teacher", "crw")
    if fmt == "crw":
        return dataclasses.replace(rgb, preset="crw", train_preset="crw")
    return dataclasses.replace(rgb, protocol="stt") if fmt == "vfs" else rgb


def _tensors(raw: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """The tensors of the (possibly nested) state dict, without DataParallel's ``module.``."""
    for nest in ("state_dict", "model"):
        if isinstance(raw.get(nest), Mapping):
            raw = raw[nest]
            break
    tensors = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors:
        raise ImportFormatError(f"{source}: no tensors found; expected a ResNet checkpoint")
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def _arch(state: Mapping[str, Tensor], source: str, fmt: str) -> str:
    held = detect_arch(state)
    if held is None:
        raise ImportFormatError(f"{source}: no layer1.0.* keys after mapping the {fmt} layout; "
                                f"first keys {list(state)[:3]}")
    if held[0] not in CHANNELS:
        raise ImportFormatError(f"{source}: holds a {held[0]} ({held[1]}); stcorr runs "
                                f"{' and '.join(CHANNELS)}")
    return held[0]


def _trunk_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a torchvision ``arch`` without ``fc`` (built on the meta device: no memory)."""
    import torchvision  # lazy, as in stcorr.models.resnet

    with torch.device("meta"):
        net = getattr(torchvision.models, arch)(weights=None)
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("fc.")}


def _note(message: str) -> None:
    print(f"stcorr: note: {message}", file=sys.stderr, flush=True)
