"""Pretrain stage: MoCo v2 on still images (STT step 1, STT Eq. 1; Li & Liu, CVPR 2023)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from stcorr.data.augment import ViewSpec
from stcorr.data.reader import make_image_dataset, make_loader
from stcorr.models.contract import ModelContract, override_contract
from stcorr.models.resnet import unwrap
from stcorr.objectives.moco import MoCo
from stcorr.train.stages import TrainStage, resume_stream


def image_ids(keys: list[str]) -> Tensor:
    """Stable non-negative int64 ids of the images' sample keys (``(N,)``), for diagnostics."""
    return torch.tensor([int.from_bytes(hashlib.sha1(k.encode()).digest()[:8], "little") >> 1
                         for k in keys], dtype=torch.long)


class PretrainStage(TrainStage):
    """MoCo v2 with SGD (momentum 0.9) and a cosine schedule; output: the query encoder."""

    name = "pretrain"

    def build(self) -> nn.Module:
        return MoCo.from_config(self.cfg.pretrain.moco, self.cfg.pretrain.arch)

    def optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in module.parameters() if p.requires_grad]  # the key encoder has none
        section = self.cfg.pretrain
        return torch.optim.SGD(params, lr=section.lr, momentum=0.9, weight_decay=section.weight_decay)

    def batches(self, rank: int, world: int, start_step: int) -> Iterator[dict[str, Any]]:
        section = self.cfg.pretrain
        dataset = make_image_dataset(
            self.inputs.shards,
            rank=rank,
            world_size=world,
            size=section.image_size,
            seed=section.seed,
            resampled=True,
            samples_per_rank=section.steps * section.batch_size,
            s3_endpoint_url=self.cfg.storage.s3_endpoint_url,
            views=ViewSpec(scale=section.crop_scale, jitter=section.color_jitter),
        )
        loader = make_loader(dataset, section.batch_size, self.cfg.compute.loader_workers)
        return resume_stream(loader, start_step)

    def step(self, module: nn.Module, batch: dict[str, Any], rng: np.random.Generator,
             diagnose: bool = False) -> dict[str, Tensor]:
        out = module(batch["q"], batch["k"], image_ids(batch["key"]))
        keep = ("loss", "acc1", "acc1_chance", "positive_in_queue")
        return {k: out[k] for k in keep if k in out}

    def encoder(self, module: nn.Module) -> nn.Module:
        inner = unwrap(module)
        return cast(nn.Module, inner.encoder_q)

    def contract(self) -> ModelContract:
        """RGB, ImageNet-normalised; evaluated in the stride-8 eval preset."""
        return override_contract("moco", arch=self.cfg.pretrain.arch)
