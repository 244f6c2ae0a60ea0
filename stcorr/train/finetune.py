"""Finetune stage: the temporal objective on video clips, STT (default) or CRW.

STT (Li & Liu, CVPR 2023, step 2): the student starts from the pretrain weights (or from scratch,
the paper's "YTV only" rows) and sees clips with one a/b channel dropped, as Lab (the reference
code) or converted back to RGB (``finetune.stt.student_input``, docs/methods.md 2.4); the frozen
teacher sees RGB. CRW (Jabri et al., NeurIPS 2020): RGB clips of ``clip_frames`` frames. Adam with
a linear warm-up and cosine decay for both: STT's schedule; CRW's code decays its rate in steps
instead (docs/methods.md 1.10).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from stcorr.data.augment import ClipSpec
from stcorr.data.reader import make_clip_dataset, make_loader
from stcorr.models.contract import ModelContract, override_contract
from stcorr.models.resnet import build_backbone, load_weights_file, unwrap
from stcorr.objectives.crw import CRW
from stcorr.objectives.stt import SttObjective, required_taps
from stcorr.train.panels import affinity_panel, reconstruction_panel
from stcorr.train.stages import TrainStage, resume_stream
from stcorr.train.teacher import freeze, state_sha256


class FinetuneStage(TrainStage):
    """STT or CRW on the video shards; output: the student encoder."""

    name = "finetune"

    def build(self) -> nn.Module:
        section = self.cfg.finetune
        init = self.inputs.init_weights if section.init == "pretrain" else None
        if section.objective == "crw":
            crw = CRW.from_config(section.crw, section.arch)
            if init is not None:
                load_weights_file(crw.encoder, init)
            return crw
        student = build_backbone(section.student_preset, section.arch, out=required_taps(section.stt))
        if init is not None:
            load_weights_file(student, init)
        teacher = None
        if section.stt.global_distill:
            if self.inputs.teacher_weights is None:
                raise ValueError(
                    "finetune.stt.global_distill: needs a teacher; set finetune.teacher "
                    "or run the teacher stage"
                )
            teacher = build_backbone("stt_teacher", section.arch)
            load_weights_file(teacher, self.inputs.teacher_weights)
            freeze(teacher)
        return SttObjective(section.stt, student, teacher)

    def optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in module.parameters() if p.requires_grad]  # the teacher has none
        return torch.optim.Adam(params, lr=self.cfg.finetune.lr)

    def batches(self, rank: int, world: int, start_step: int) -> Iterator[dict[str, Any]]:
        section = self.cfg.finetune
        stt = section.objective == "stt"
        clip = ClipSpec(
            frames=section.clip_frames,
            frame_gap=section.frame_gap,
            crop_size=section.crop_size,
            lab=stt,
            channel_dropout=stt and section.stt.channel_dropout,
        )
        dataset = make_clip_dataset(
            self.inputs.shards,
            rank=rank,
            world_size=world,
            clip=clip,
            seed=section.seed,
            shuffle_buffer=16,
            resampled=True,
            samples_per_rank=section.steps * section.batch_size,
            decoder=self.cfg.compute.video_decoder,
            s3_endpoint_url=self.cfg.storage.s3_endpoint_url,
        )
        loader = make_loader(dataset, section.batch_size, self.cfg.compute.loader_workers)
        return resume_stream(loader, start_step)

    def step(self, module: nn.Module, batch: dict[str, Any], rng: np.random.Generator,
             diagnose: bool = False) -> dict[str, Tensor]:
        if self.cfg.finetune.objective == "crw":
            return dict(module(batch["rgb"]))
        if "lab_dropped" in batch:
            return dict(module(batch["lab_dropped"], batch["lab"], batch["rgb"], batch["drop_channel"],
                               diagnose=diagnose))
        # Channel dropout off: reconstruct a (channel 1) from the undropped input.
        return dict(module(batch["lab"], batch["lab"], batch["rgb"], 1, diagnose=diagnose))

    def encoder(self, module: nn.Module) -> nn.Module:
        inner = unwrap(module)
        encoder = inner.encoder if isinstance(inner, CRW) else inner.student
        return cast(nn.Module, encoder)

    def contract(self) -> ModelContract:
        """CRW: RGB in the ``crw`` preset; STT: the student's input in the eval preset."""
        section = self.cfg.finetune
        if section.objective == "crw":
            return override_contract("crw", arch=section.arch)
        spelling = "stt-rgb" if section.stt.student_input == "rgb" else "stt"
        return override_contract(spelling, arch=section.arch, train_preset=section.student_preset)

    def panel(self, out: dict[str, Tensor], batch: dict[str, Any]) -> np.ndarray | None:
        if "reconstruction" in out:
            return reconstruction_panel(batch, out["reconstruction"])
        if "affinity" in out:
            return affinity_panel(batch["rgb"], out["affinity"])
        return None

    def extra_files(self, module: nn.Module) -> dict[str, bytes]:
        """The teacher's sha256 at the end of training, checked against the teacher stage's."""
        inner = unwrap(module)
        teacher = getattr(inner, "teacher", None)
        if teacher is None:
            return {}
        return {"teacher_sha256.txt": state_sha256(teacher.state_dict()).encode()}
