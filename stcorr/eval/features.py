"""Dense features for label propagation: the evaluation presets and the baselines.

Both papers propagate labels with the res4 map of the encoder, L2-normalised over channels
(CRW, Jabri et al., NeurIPS 2020, Sec. 3.4, ``test.py:78-86``; STT, Li & Liu, CVPR 2023,
Sec. 4.1, ``local_attention.py:277-279``), docs/methods.md 3.1. How an encoder is run (colour
space, normalisation, backbone preset, stride) is its input contract
(:mod:`stcorr.models.contract`), read from the ``.pt`` or the registry, never guessed:

- STT students run in the ``eval_d8`` / ``eval_d4`` preset on Lab normalised by (50, 0, 0) /
  (50, 127, 127), or on ImageNet-normalised RGB when trained with ``student_input: rgb``;
- CRW encoders run in the ``crw`` preset (res4, stride 8) on ImageNet-normalised RGB;
- the spatial (MoCo) encoder and the STT teacher run in the eval preset on RGB, their input.

Baselines share the harness: ``lab`` = raw normalised Lab pixels average-pooled to the feature
stride, ``copy`` = the first frame's labels copied to every frame (no features at all),
``random`` = a randomly initialised network with the candidate's contract (seeded, so every run
and every Ray worker builds the same network; see :mod:`stcorr.eval.calibrate` for its
BatchNorm statistics).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcorr.config import TrackingConfig
from stcorr.data.lab import normalize_lab, normalize_rgb, rgb_to_lab
from stcorr.models.contract import (
    OVERRIDES,
    ModelContract,
    disagreement,
    override_contract,
    unpack,
    with_stride,
)
from stcorr.models.resnet import fold_batchnorm, read_state

Kind = Literal["encoder", "lab", "random", "copy"]
# Frames per forward pass. One: at 480p a frame's stride-2 activations (64 x 240 x 427 floats,
# 26 MB) already overflow the caches, and a batch of 4 took 0.39 s per frame against 0.31 for
# one at a time (float32, 2 threads, this CPU); it also bounds activation memory on a laptop.
FRAME_BATCH = 1
RANDOM_SEED = 0
BASELINES = ("lab", "random", "copy")
OBJECTIVES = OVERRIDES  # the spellings ``--objective`` accepts


@dataclass(frozen=True)
class ModelSpec:
    """What to run on the frames; small and picklable (Ray tasks get it, not a module).

    Attributes:
        name: label in tables and MLflow ("candidate", "lab", "random", "teacher", "copy").
        kind: "encoder" (weights from ``weights``), "lab" (no network), "random" (seeded
            init, or recalibrated weights in ``weights``) or "copy" (no features).
        contract: how the network is run: input, normalisation, preset, arch, stride.
        weights: local state-dict file for ``kind == "encoder"`` (and a recalibrated random).
        notes: what was done to the model for a fair comparison (shown in the report).
    """

    name: str
    kind: Kind
    contract: ModelContract = dataclasses.field(default_factory=ModelContract)
    weights: str | None = None
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """How the model is run, in one phrase (the report's "how each model was run")."""
        if self.kind == "lab":
            return (f"raw Lab pixels, normalised by (50, 0, 0) / (50, 127, 127), averaged over each "
                    f"{self.stride}x{self.stride} cell")
        if self.kind == "copy":
            return "frame 0's labels repeated in every frame (no features)"
        return self.contract.describe()

    @property
    def input(self) -> str:
        return self.contract.input

    @property
    def preset(self) -> str:
        return self.contract.preset

    @property
    def arch(self) -> str:
        return self.contract.arch

    @property
    def stride(self) -> int:
        return self.contract.stride


def warn(message: str) -> None:
    """One warning line on stderr (the CLI's errors use the same prefix)."""
    from stcorr.runtime import console

    console.warn(message)


def load_model(ref: str, *, objective: str | None = None, stride: int = 8,
               tracking: TrackingConfig | None = None, name: str | None = None,
               like: ModelContract | None = None, fallback: str = "stt") -> ModelSpec:
    """Resolve a model reference into a ``ModelSpec`` (checking that the weights load).

    An encoder is run as its contract says (the ``.pt``'s, else its registry version's tags).
    ``objective`` overrides it, with a warning when the two disagree; a file without any
    contract is read as ``objective``, else ``fallback``, with a warning.

    Args:
        ref: "lab", "copy", "random", a checkpoint file, ``models:/name@alias`` or
            ``models:/name/3``.
        objective: override: "stt" (Lab, eval preset), "stt-rgb" (RGB, eval preset), "crw"
            (RGB, crw preset) or "moco" (the spatial encoder: RGB, eval preset).
        stride: ``evaluate.stride``, 8 or 4 (the ``crw`` preset is stride 8 only).
        tracking: the MLflow store holding the registry (for ``models:/`` references).
        name: label for tables; defaults to the reference for baselines, else "candidate".
        like: the contract a ``random`` baseline copies (the candidate's, for a fair
            comparison); default: the override's, or STT's.
        fallback: how to read a file that records no contract and gets no ``objective``.

    Raises:
        ModelRefError: the file or registry entry does not exist.
        ValueError: the weights do not fit a ResNet-18/50, or a bad objective/stride.
    """
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if stride not in (8, 4):
        raise ValueError(f"evaluate.stride: expected 8 or 4, got {stride}")
    if ref in BASELINES:
        base = like if like is not None else override_contract(objective or "stt", stride=stride)
        contract = with_stride(base, stride) if ref == "random" else override_contract("stt", stride=stride)
        return ModelSpec(name or ref, ref, contract)  # type: ignore[arg-type]
    from stcorr.tracking import registry_contract, resolve_encoder

    path = resolve_encoder(ref, tracking)
    state, stored = unpack(read_state(path.read_bytes(), str(path)), str(path))
    stored = stored or registry_contract(ref, tracking)
    contract = _choose_contract(ref, stored, objective, _arch_of(state), stride, fallback)
    spec = ModelSpec(name or "candidate", "encoder", contract, str(path))
    build_network(spec, state)  # fail here, on the driver, not in every Ray task
    return spec


def _choose_contract(ref: str, stored: ModelContract | None, objective: str | None, arch: str,
                     stride: int, fallback: str) -> ModelContract:
    """The stored contract, or the override (warning where they disagree or nothing is stored)."""
    if objective is None:
        if stored is not None:
            return with_stride(stored, stride)
        guess = override_contract(fallback, arch=arch, stride=stride)
        warn(f"{ref}: no input contract recorded with the weights; reading it as {fallback!r} "
             f"({guess.describe()}); pass --objective {'|'.join(OVERRIDES)} if it was trained otherwise")
        return guess
    override = override_contract(objective, arch=arch, stride=stride)
    if stored is not None and (diff := disagreement(with_stride(stored, stride), override)):
        warn(f"{ref}: --objective {objective} disagrees with the model's contract "
             f"({stored.describe()}): {'; '.join(diff)}; using {objective} as asked")
    return override


def normalise(rgb: Tensor, colour: str) -> Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] as a model with ``colour`` input expects it."""
    return normalize_lab(rgb_to_lab(rgb)) if colour == "lab" else normalize_rgb(rgb)


def _arch_of(state: dict[str, Tensor]) -> str:
    """ResNet-50 if the state has bottleneck blocks (``conv3``), else ResNet-18."""
    inner = next((v for k, v in state.items() if k in ("state_dict", "model")
                  and isinstance(v, dict)), state)
    return "resnet50" if any(k.endswith("layer1.0.conv3.weight") for k in inner) else "resnet18"


def build_network(spec: ModelSpec, state: dict[str, Tensor] | None = None) -> nn.Module | None:
    """The backbone of ``spec`` in eval mode (None for the Lab and copy baselines).

    Args:
        spec: the model.
        state: the encoder's state dict (``kind == "encoder"``, or a recalibrated random
            network); read from ``spec.weights`` when None.
    """
    if spec.kind in ("lab", "copy"):
        return None
    from stcorr.models.resnet import build_backbone, load_encoder_state

    if spec.kind == "random":
        torch.manual_seed(RANDOM_SEED)  # the same random network in every process
    net = build_backbone(spec.preset, spec.arch, out=("res4",))
    if spec.kind == "encoder" or spec.weights is not None or state is not None:
        if state is None:
            assert spec.weights is not None, "an encoder spec carries its weights file"
            state = read_state(Path(spec.weights).read_bytes(), spec.weights)
        load_encoder_state(net, unpack(state, spec.weights or spec.name)[0], spec.weights or spec.name)
    return net.eval().to(memory_format=torch.channels_last)


Precision = Literal["auto", "float32", "bfloat16"]


def native_bf16() -> bool:
    """Whether this machine multiplies bf16 natively (a CUDA device, AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    return torch.cuda.is_available() or cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()


def resolved_precision(precision: Precision) -> Literal["float32", "bfloat16"]:
    """``evaluate.precision`` made concrete on this machine (``auto``: bf16 where native)."""
    if precision == "auto":
        return "bfloat16" if native_bf16() else "float32"
    return precision


def check_precision(precision: Precision) -> None:
    """Warn when ``evaluate.precision`` asks for bf16 on a machine that only emulates it."""
    if precision == "bfloat16" and not native_bf16():
        warn("evaluate.precision=bfloat16: this machine has no native bf16 (AVX512-BF16, AMX or "
             "CUDA), so evaluation will run slower than with float32")


class FeatureExtractor:
    """Frames -> L2-normalised res4 features, under no_grad, BatchNorm folded into the convolutions.

    Args:
        spec: the model; ``state`` optionally carries its weights (e.g. from the Ray store).
        precision: the network's forward pass in float32 or under bfloat16 autocast
            (``evaluate.precision``; ``auto`` is resolved here, on the machine that runs it, and
            kept in ``self.precision``); the features come back float32 either way.
    """

    def __init__(self, spec: ModelSpec, state: dict[str, Tensor] | None = None,
                 precision: Precision = "float32") -> None:
        self.spec = spec
        net = build_network(spec, state)
        self.net = None if net is None else fold_batchnorm(net).to(memory_format=torch.channels_last)
        # what ran: Lab pixels and the copy baseline have no forward pass, so float32
        self.precision = resolved_precision(precision) if self.net is not None else "float32"

    @torch.no_grad()
    def __call__(self, frames: np.ndarray, batch: int = FRAME_BATCH) -> Tensor:
        """Features of a clip.

        Args:
            frames: ``(T, H, W, 3)`` uint8 RGB.
            batch: frames per forward pass.

        Returns:
            ``(T, C, h, w)`` float32, unit L2 norm over C (zero vectors stay zero);
            ``h = ceil(H / stride)``, ``w = ceil(W / stride)``.
        """
        out = [self._batch(torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])))
               for i in range(0, len(frames), batch)]
        return torch.cat(out)

    def _batch(self, frames: Tensor) -> Tensor:
        rgb = frames.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
        x = normalise(rgb, self.spec.input)
        if self.net is None:  # raw pixels: one cell = the mean colour of its stride^2 pixels
            s = self.spec.stride
            feats = F.avg_pool2d(x, s, s, ceil_mode=True)  # (B, 3, ceil(H/s), ceil(W/s))
        else:
            # channels-last: oneDNN's fast layout on CPUs, ~25% less time at 480p
            with torch.autocast(x.device.type, torch.bfloat16, enabled=self.precision == "bfloat16"):
                feats = self.net(x.contiguous(memory_format=torch.channels_last))["res4"]  # (B, C, h, w)
            feats = feats.float().contiguous()
        return F.normalize(feats, dim=1)
