"""What each training stage trains: its module, optimiser, batches, step and exported encoder.

The worker loop (:mod:`stcorr.train.worker`) is the same for every stage; a stage only says
how to build things. No maths here: the objectives live in :mod:`stcorr.objectives`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stcorr.config import PipelineConfig
from stcorr.models.contract import ModelContract, pack
from stcorr.models.resnet import encoder_state_dict


@dataclass
class StageInputs:
    """What a stage reads: shard URLs and, for fine-tuning, the initial and teacher weights."""

    shards: list[str]
    init_weights: str | None = None  # local path of a torchvision-named state dict
    teacher_weights: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TrainStage:
    """Base of a stage; subclasses fill in the five hooks."""

    name = "stage"

    def __init__(self, cfg: PipelineConfig, inputs: StageInputs) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.history: list[dict[str, float]] = []  # log-step scalars since this (re)start

    # -- hooks -----------------------------------------------------------------------------
    def build(self) -> nn.Module:
        raise NotImplementedError

    def optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def batches(self, rank: int, world: int, start_step: int) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def step(self, module: nn.Module, batch: dict[str, Any], rng: np.random.Generator,
             diagnose: bool = False) -> dict[str, Tensor]:
        """The step's loss terms; ``diagnose`` (log steps) asks for costlier diagnostics too."""
        raise NotImplementedError

    def encoder(self, module: nn.Module) -> nn.Module:
        raise NotImplementedError

    def contract(self) -> ModelContract:
        """How the exported encoder must be fed at evaluation (stored with its weights)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return int(self.section.steps)

    @property
    def batch_size(self) -> int:
        return int(self.section.batch_size)

    @property
    def section(self) -> Any:
        """The stage's config section (``cfg.pretrain`` or ``cfg.finetune``)."""
        return getattr(self.cfg, self.name)

    def panel(self, out: dict[str, Tensor], batch: dict[str, Any]) -> np.ndarray | None:
        """An image for people to look at every ``image_every`` steps (None = nothing)."""
        return None

    def extra_files(self, module: nn.Module) -> dict[str, bytes]:
        """Files to put next to the checkpoint (e.g. the teacher's hash at the end)."""
        return {}

    def export(self, module: nn.Module) -> dict[str, Any]:
        """The stage's output: the encoder in torchvision key names, packed with its contract."""
        return pack(encoder_state_dict(self.encoder(module)), self.contract())


def resume_stream(loader: Iterable[dict[str, Any]], start_step: int) -> Iterator[dict[str, Any]]:
    """The run's seeded batch stream, positioned at ``start_step``.

    The stream is a pure function of the seed, so a resumed run sees exactly the batches the
    uninterrupted run would have. Skipping re-reads the consumed batches (decoding included):
    seconds at demo scale, but proportional to the steps done, which is the price of exactness.
    """
    return itertools.islice(iter(loader), start_step, None)
