"""Dense features for label propagation: the evaluation presets and the baselines.

Both papers propagate labels with the res4 map of the encoder, L2-normalised over channels
(CRW, Jabri et al., NeurIPS 2020, Sec. 3.4, ``test.py:78-86``; STT, Li & Liu, CVPR 2023,
Sec. 4.1, ``local_attention.py:277-279``), METHODS.md 3.1:

- STT-trained encoders run in the ``eval_d8`` / ``eval_d4`` preset (stride 8 / 4) on Lab
  normalised by (50, 0, 0) / (50, 127, 127), the student's input;
- CRW encoders run in the ``crw`` preset (res4, stride 8) on ImageNet-normalised RGB;
- the STT teacher (image-level MoCo encoder) runs in the eval preset on RGB, its own input.

Baselines share the harness: ``lab`` = raw normalised Lab pixels average-pooled to the feature
stride, ``random`` = a randomly initialised eval preset (seeded, so every run and every Ray
worker builds the same network).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcorr.config_sections import FinetuneConfig, TrackingConfig
from stcorr.data.lab import normalize_lab, normalize_rgb, rgb_to_lab

Kind = Literal["encoder", "lab", "random"]
Input = Literal["lab", "rgb"]
Preset = Literal["eval_d8", "eval_d4", "crw"]
FRAME_BATCH = 4  # frames per forward pass: bounds activation memory at 480p on a laptop
RANDOM_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """What to run on the frames; small and picklable (Ray tasks get it, not a module).

    Attributes:
        name: label in tables and MLflow ("candidate", "lab", "random", "teacher").
        kind: "encoder" (weights from ``weights``), "lab" (no network) or "random".
        input: "lab" (STT student) or "rgb" (CRW, teacher).
        preset: backbone preset (``eval_d8``, ``eval_d4`` or ``crw``).
        arch: "resnet18" or "resnet50".
        stride: feature stride in pixels (8 or 4).
        weights: local state-dict file for ``kind == "encoder"``.
    """

    name: str
    kind: Kind
    input: Input = "lab"
    preset: Preset = "eval_d8"
    arch: str = "resnet18"
    stride: int = 8
    weights: str | None = None


OBJECTIVES = ("stt", "stt-rgb", "crw")


def objective_of(finetune: FinetuneConfig) -> str:
    """How ``finetune`` trains the candidate, as :func:`load_model` needs it: input and preset."""
    if finetune.objective == "stt" and finetune.stt.student_input == "rgb":
        return "stt-rgb"
    return finetune.objective


def load_model(ref: str, *, objective: str = "stt", stride: int = 8,
               tracking: TrackingConfig | None = None, name: str | None = None,
               teacher: bool = False) -> ModelSpec:
    """Resolve a model reference into a ``ModelSpec`` (checking that the weights load).

    Args:
        ref: "lab", "random", a checkpoint file, ``models:/name@alias`` or ``models:/name/3``.
        objective: how the encoder was trained: "stt" (Lab, eval preset), "stt-rgb" (STT with
            ``finetune.stt.student_input: rgb``: RGB, eval preset) or "crw" (RGB, crw preset).
        stride: 8 or 4; the ``crw`` preset is stride 8 only.
        tracking: the MLflow store holding the registry (for ``models:/`` references).
        name: label for tables; defaults to "lab", "random", "teacher" or "candidate".
        teacher: the reference is the STT teacher: RGB input in the eval preset.

    Raises:
        ModelRefError: the file or registry entry does not exist.
        ValueError: the weights do not fit a ResNet-18/50, or a bad objective/stride.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if stride not in (8, 4):
        raise ValueError(f"evaluate.stride: expected 8 or 4, got {stride}")
    crw = objective == "crw" and not teacher
    preset: Preset = "crw" if crw else ("eval_d8" if stride == 8 else "eval_d4")
    spec = ModelSpec(name or ref, "lab", "lab", preset, "resnet18", 8 if crw else stride)
    if ref == "lab":
        return spec
    if ref == "random":
        return replace(spec, kind="random", input="rgb" if crw else "lab")
    from stcorr.registry import resolve_encoder

    path = resolve_encoder(ref, tracking)
    state = read_state(path.read_bytes(), str(path))
    spec = replace(spec, name=name or ("teacher" if teacher else "candidate"), kind="encoder",
                   input="rgb" if crw or teacher or objective == "stt-rgb" else "lab", arch=_arch_of(state),
                   weights=str(path))
    build_network(spec, state)  # fail here, on the driver, not in every Ray task
    return spec


def read_state(data: bytes, source: str) -> dict[str, Tensor]:
    """A state dict from checkpoint bytes, as one-line errors."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors vary with the damage; report one line
        raise ValueError(f"{source}: cannot read checkpoint ({type(err).__name__}); "
                         f"expected a ResNet state dict (.pt)") from err
    if not isinstance(state, dict):
        raise ValueError(f"{source}: holds a {type(state).__name__}; expected a state dict")
    return state


def _arch_of(state: dict[str, Tensor]) -> str:
    """ResNet-50 if the state has bottleneck blocks (``conv3``), else ResNet-18."""
    inner = next((v for k, v in state.items() if k in ("state_dict", "model")
                  and isinstance(v, dict)), state)
    return "resnet50" if any(k.endswith("layer1.0.conv3.weight") for k in inner) else "resnet18"


def build_network(spec: ModelSpec, state: dict[str, Tensor] | None = None) -> nn.Module | None:
    """The backbone of ``spec`` in eval mode (None for the Lab baseline).

    Args:
        spec: the model.
        state: the encoder's state dict (``kind == "encoder"``); read from ``spec.weights``
            when None.
    """
    if spec.kind == "lab":
        return None
    from stcorr.models.resnet import build_backbone, load_encoder_state

    if spec.kind == "random":
        torch.manual_seed(RANDOM_SEED)  # the same random network in every process
    net = build_backbone(spec.preset, spec.arch, out=("res4",))
    if spec.kind == "encoder":
        if state is None:
            assert spec.weights is not None, "an encoder spec carries its weights file"
            state = read_state(Path(spec.weights).read_bytes(), spec.weights)
        load_encoder_state(net, state, spec.weights or spec.name)
    return net.eval()


class FeatureExtractor:
    """Frames -> L2-normalised res4 features, in frame batches under no_grad.

    Args:
        spec: the model; ``state`` optionally carries its weights (e.g. from the Ray store).
    """

    def __init__(self, spec: ModelSpec, state: dict[str, Tensor] | None = None) -> None:
        self.spec = spec
        self.net = build_network(spec, state)

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
        x = normalize_lab(rgb_to_lab(rgb)) if self.spec.input == "lab" else normalize_rgb(rgb)
        if self.net is None:  # raw pixels: one cell = the mean colour of its stride^2 pixels
            s = self.spec.stride
            feats = F.avg_pool2d(x, s, s, ceil_mode=True)  # (B, 3, ceil(H/s), ceil(W/s))
        else:
            feats = self.net(x)["res4"]  # (B, C, h, w)
        return F.normalize(feats, dim=1)
