"""ResNet-18/50 backbones with pyramid taps res3/res4/res5 and configurable strides.

Torchvision ResNets (random init, never downloaded) re-strided as in the STT code (docs/methods.md
2.3: `strides` = stride of the first block of layer1..layer4, stem pool max|mean|none;
Li & Liu, CVPR 2023) and as in CRW's `modify()` (Jabri et al., NeurIPS 2020: layer3/layer4 at
stride 1, reflect padding). Parameters keep torchvision key names (`conv1.weight`, `bn1.*`,
`layerX.Y.*`), so checkpoints move between stages, torchvision and the STT loader unchanged.

Output stride of a tap = 2 (stem conv) x 2 (if pool) x product of the strides up to its layer.

| preset           | strides (l1..l4) | pool | padding | taps at stride (default `out`)       |
|------------------|------------------|------|---------|--------------------------------------|
| stt_student      | (1, 2, 2, 4)     | none | zeros   | res3 /4, res4 /8, res5 /32           |
| stt_student_pool | (1, 1, 2, 4)     | max  | zeros   | res3 /4, res4 /8, res5 /32           |
| stt_teacher      | (1, 2, 2, 2)     | max  | zeros   | res5 /32 (res3 /8, res4 /16)         |
| eval_d8          | (1, 2, 2, 1)     | none | zeros   | res4 /8 (layer4 not built)           |
| eval_d4          | (1, 1, 1, 1)     | mean | zeros   | res4 /4 (layer4 not built)           |
| eval_pool_d8     | (1, 2, 1, 1)     | max  | zeros   | res4 /8 (layer4 not built)           |
| eval_student_pool_d8 | (1, 1, 2, 1) | max  | zeros   | res4 /8 (layer4 not built)           |
| crw              | (1, 2, 1, 1)     | max  | reflect | res4 /8, res5 /8                     |

The ``*_pool`` presets keep the max-pool stem the spatial (MoCo) stage trains with, so every
layer sees features at the scale it learned them: ``eval_pool_d8`` is a standard ResNet with
layer3's stride removed (how CRW evaluates ImageNet and MoCo ResNets), the teacher's preset;
``stt_student_pool`` moves the stride of layer2 to layer3 to keep STT's pyramid (res3 /4, res4
/8), and ``eval_student_pool_d8`` is its evaluation. Both cost half to two thirds of the
pool-free presets at 480p (layer1 runs at /4, not /2).

Channels: ResNet-18 res3 128, res4 256, res5 512; ResNet-50 res3 512, res4 1024, res5 2048.
`stt_student` for ResNet-18 is the analogue of the paper's ResNet-50 student config (the repo
ships no ResNet-18 training config). In `crw`, layer3/layer4 have stride 1 in their first block
and torchvision puts strides nowhere else, so every conv there has stride 1, as CRW's `modify()`.
Layers deeper than the deepest requested tap are not built (no unused parameters under DDP).
"""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

Arch = Literal["resnet18", "resnet50"]
Pool = Literal["max", "mean", "none"]
PaddingMode = Literal["zeros", "reflect"]

TAPS: dict[str, str] = {"res3": "layer2", "res4": "layer3", "res5": "layer4"}
CHANNELS: dict[str, dict[str, int]] = {
    "resnet18": {"res3": 128, "res4": 256, "res5": 512},
    "resnet50": {"res3": 512, "res4": 1024, "res5": 2048},
}
_LAYERS = ("layer1", "layer2", "layer3", "layer4")
_STRIP_PREFIXES = ("module.", "encoder_q.", "encoder.", "backbone.")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Strides, stem pool, padding and default taps of one preset."""

    strides: tuple[int, int, int, int]
    pool: Pool
    padding_mode: PaddingMode
    out: tuple[str, ...]


PRESETS: dict[str, BackboneSpec] = {
    "stt_student": BackboneSpec((1, 2, 2, 4), "none", "zeros", ("res3", "res4", "res5")),
    "stt_student_pool": BackboneSpec((1, 1, 2, 4), "max", "zeros", ("res3", "res4", "res5")),
    "stt_teacher": BackboneSpec((1, 2, 2, 2), "max", "zeros", ("res5",)),
    "eval_d8": BackboneSpec((1, 2, 2, 1), "none", "zeros", ("res4",)),
    "eval_d4": BackboneSpec((1, 1, 1, 1), "mean", "zeros", ("res4",)),
    "eval_pool_d8": BackboneSpec((1, 2, 1, 1), "max", "zeros", ("res4",)),
    "eval_student_pool_d8": BackboneSpec((1, 1, 2, 1), "max", "zeros", ("res4",)),
    "crw": BackboneSpec((1, 2, 1, 1), "max", "reflect", ("res4", "res5")),
}


class ResNetBackbone(nn.Module):
    """Torchvision ResNet trunk returning the requested pyramid taps; no avgpool, no fc.

    Args:
        arch: "resnet18" or "resnet50".
        strides: stride of the first block of layer1..layer4.
        pool: stem pool, "max" (3x3/2), "mean" (AvgPool2d(3, 2, 1)) or "none".
        padding_mode: "zeros" or "reflect" (CRW), applied to every conv with padding.
        out: taps to return, from "res3" (layer2), "res4" (layer3), "res5" (layer4).
        state_dict_path: optional local checkpoint with torchvision key names.

    Raises:
        ValueError: unknown arch, pool, padding mode or tap, or a bad checkpoint.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        strides: Sequence[int] = (1, 2, 2, 2),
        pool: str = "max",
        padding_mode: str = "zeros",
        out: Sequence[str] = ("res3", "res4", "res5"),
        state_dict_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        _check_args(arch, strides, pool, padding_mode, out)
        self.arch = arch
        self.out = tuple(out)
        depth = max(_LAYERS.index(TAPS[tap]) for tap in self.out) + 1
        self.layer_names = _LAYERS[:depth]
        import torchvision  # lazy: importing torchvision costs seconds in every spawned worker

        net = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        pools: dict[str, nn.Module] = {
            "max": net.maxpool,
            "mean": nn.AvgPool2d(3, 2, 1),
            "none": nn.Identity(),
        }
        self.maxpool = pools[pool]
        for name, stride in zip(self.layer_names, strides, strict=False):
            layer: nn.Sequential = getattr(net, name)
            _set_first_block_stride(layer, stride)
            setattr(self, name, layer)
        if padding_mode == "reflect":
            _use_reflect_padding(self)
        stem = 2 * (1 if pool == "none" else 2)
        cumulative = [stem * _prod(strides[: i + 1]) for i in range(4)]
        self.out_strides = {tap: cumulative[_LAYERS.index(TAPS[tap])] for tap in self.out}
        self.out_channels = {tap: CHANNELS[arch][tap] for tap in self.out}
        if state_dict_path is not None:
            load_weights_file(self, state_dict_path)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the trunk up to the deepest requested tap.

        Args:
            x: (B, 3, H, W) images.

        Returns:
            {tap: (B, C_tap, H / s_tap, W / s_tap)} for each tap in `out` (sizes rounded up).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats: dict[str, Tensor] = {}
        for tap_index, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            tap = f"res{tap_index + 2}"
            if tap in self.out:
                feats[tap] = x
        return feats


def build_backbone(preset: str, arch: str = "resnet18", **kw: object) -> ResNetBackbone:
    """Build a backbone from a named preset (see the module docstring for strides/channels).

    Args:
        preset: one of PRESETS ("stt_student", "stt_teacher", "eval_d8", "eval_d4", "crw").
        arch: "resnet18" or "resnet50".
        **kw: overrides of ResNetBackbone arguments (`out`, `state_dict_path`, `strides`, ...).

    Raises:
        ValueError: unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"backbone preset {preset!r}: unknown; expected one of {sorted(PRESETS)}")
    spec = dataclasses.asdict(PRESETS[preset])
    spec.update(kw)
    return ResNetBackbone(arch=arch, **spec)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with each BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is an affine map per channel, so ``bn(conv(x))`` equals one
    convolution with scaled weights and a bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``):
    the same features up to float rounding (~1e-5 relative) and one pass over every activation
    map less (BatchNorm was ~10 % of a 480p forward pass on CPU). Pairs are the torchvision
    names: ``convN``/``bnN`` in the stem and every block, ``downsample.0``/``downsample.1``.
    The copy cannot be trained or recalibrated (its statistics are gone); ``model`` is untouched.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(unwrap(model)).eval()
    for module in folded.modules():
        pairs = [(f"conv{i}", f"bn{i}") for i in range(1, 4)]
        if isinstance(module, nn.Sequential) and len(module) == 2:
            pairs = [("0", "1")]
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return folded


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP's ``.module`` wrapper (``model`` itself when not wrapped)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def encoder_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Backbone weights in torchvision key names, on CPU (unwraps DDP's `.module`)."""
    inner = unwrap(model)
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}


def load_encoder_state(model: nn.Module, state: Mapping[str, object], source_name: str) -> None:
    """Load torchvision-named weights into `model` (strict on every parameter the model has).

    Accepts a raw state dict or one nested under "state_dict"/"model"; strips "module.",
    "encoder_q." (MoCo), "encoder." (CRW) and "backbone." prefixes, keeping only the prefixed keys;
    ignores `fc.*` and the weights of layers the model did not build.

    Raises:
        ValueError: the checkpoint holds another architecture, or keys are missing/unknown.
    """
    inner = unwrap(model)
    tensors = _torchvision_keys(state, source_name)
    arch = getattr(inner, "arch", None)
    held = detect_arch(tensors)
    if arch is not None and held is not None and held[0] != arch:
        raise ValueError(f"{source_name} holds a {held[0]} state dict ({held[1]}); this model is {arch}")
    own = inner.state_dict()
    built = {k.split(".")[0] for k in own}
    unknown = [k for k in tensors if k not in own and k.split(".")[0] in built]
    missing = [k for k in own if k not in tensors and not k.endswith("num_batches_tracked")]
    if unknown or missing:
        raise ValueError(
            f"{source_name}: state dict does not match the backbone; missing {missing[:3]}, "
            f"unexpected {unknown[:3]}; expected torchvision ResNet key names"
        )
    inner.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a ``torch.save``d torchvision-named state dict file into ``model``
    (:func:`load_encoder_state`'s rules; one-line errors for a missing or unreadable file)."""
    load_encoder_state(model, _read_checkpoint(Path(path)), str(path))


def _read_checkpoint(path: Path) -> Mapping[str, object]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; expected a ResNet state dict file")
    return read_state(path.read_bytes(), str(path))


def read_state(data: bytes, source: str) -> dict[str, Tensor]:
    """The object saved in checkpoint bytes (a state dict, possibly packed), as one-line errors.

    Raises:
        ValueError: the bytes are no ``torch.save`` file (zip/pickle errors vary with the
            damage), or they hold something other than a dict.
    """
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{source}: cannot read checkpoint ({type(err).__name__}); "
                         f"expected a ResNet state dict (.pt)") from err
    if not isinstance(state, dict):
        raise ValueError(f"{source}: holds a {type(state).__name__}; expected a state dict")
    return state


def _torchvision_keys(state: Mapping[str, object], source_name: str) -> dict[str, Tensor]:
    """Unwrap nesting, strip wrapper prefixes, drop `fc.*` and non-tensors."""
    for nest in ("state_dict", "model"):
        inner = state.get(nest)
        if isinstance(inner, Mapping):
            state = inner
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{source_name}: no tensors found; expected a ResNet state dict")
    for prefix in _STRIP_PREFIXES:
        if any(k.startswith(prefix) for k in tensors):
            # keep only the prefixed keys: a MoCo state also holds encoder_k/queue entries
            tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {k: v for k, v in tensors.items() if not k.startswith("fc.")}


def detect_arch(tensors: Mapping[str, Tensor]) -> tuple[str, str] | None:
    """(arch name, evidence) of a torchvision ResNet state dict, or None if not recognisable."""
    if not any(k.startswith("layer1.0.") for k in tensors):
        return None
    blocks = len({k.split(".")[1] for k in tensors if k.startswith("layer3.")})
    if "layer1.0.conv3.weight" in tensors:
        name = {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(blocks, "bottleneck resnet")
        return name, "layer1.0.conv3 present"
    name = {2: "resnet18", 6: "resnet34"}.get(blocks, "basic-block resnet")
    return name, f"layer1.0.conv3 absent, {blocks} blocks in layer3"


def _set_first_block_stride(layer: nn.Sequential, stride: int) -> None:
    """Put `stride` on the first block's strided conv and its downsample (adding one if needed)."""
    block: Any = layer[0]  # torchvision BasicBlock | Bottleneck (untyped)
    conv = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck has conv3
    conv.stride = (stride, stride)
    block.stride = stride  # informational in torchvision; kept consistent
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)
    elif stride != 1:  # layer1 of ResNet-18 has no downsample at stride 1
        channels = conv.in_channels
        block.downsample = nn.Sequential(
            nn.Conv2d(channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
        )


def _use_reflect_padding(model: nn.Module) -> None:
    """Reflect padding on every padded conv (CRW `scratch`); read at forward time, as `modify()`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and any(p > 0 for p in _pair(m.padding)):
            m.padding_mode = "reflect"


def _check_args(
    arch: str, strides: Sequence[int], pool: str, padding_mode: str, out: Sequence[str]
) -> None:
    if arch not in CHANNELS:
        raise ValueError(f"backbone arch {arch!r}: unknown; expected one of {sorted(CHANNELS)}")
    if len(strides) != 4 or any(int(s) < 1 for s in strides):
        raise ValueError(f"backbone strides {tuple(strides)}: expected 4 positive ints (l1..l4)")
    if pool not in ("max", "mean", "none"):
        raise ValueError(f"backbone pool {pool!r}: expected 'max', 'mean' or 'none'")
    if padding_mode not in ("zeros", "reflect"):
        raise ValueError(f"backbone padding_mode {padding_mode!r}: expected 'zeros' or 'reflect'")
    if not out or any(tap not in TAPS for tap in out):
        raise ValueError(f"backbone out {tuple(out)}: expected a non-empty subset of {list(TAPS)}")


def _pair(value: int | tuple[int, ...] | str) -> tuple[int, ...]:
    if isinstance(value, str):  # "same"/"valid" padding is not used by torchvision ResNets
        return (0,)
    return value if isinstance(value, tuple) else (value, value)


def _prod(values: Sequence[int]) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result
