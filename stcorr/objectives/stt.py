"""The STT temporal objective, STT Eq. 10 (Li & Liu, CVPR 2023, arXiv 2209.07778).

    L = L_rec^p + alpha * L_lc^e + beta * L_gc

pyramid frame reconstruction (STT Eq. 5-7), local correlation distillation with entropy-based
selection (STT Eq. 8-9) and global correlation distillation against the frozen spatial teacher
(STT Eq. 2-3). Frame 0 of a clip is the reference, the last frame the target (docs/methods.md 2.2).
Every term is a config switch, so the ablation rows of the paper's Table 1 are configs
(``TABLE1_ROWS``), not code edits.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from stcorr.config import SttConfig
from stcorr.data.lab import denormalize_lab, lab_to_rgb, normalize_rgb
from stcorr.objectives.correlation import LocalCorrelation, local_correlation
from stcorr.objectives.distillation import (
    entropy_selection,
    global_distillation_loss,
    local_distillation_loss,
    pool_fine_correlation,
)
from stcorr.objectives.gradients import gradient_shares
from stcorr.objectives.reconstruction import (
    copy_reconstruction,
    pyramid_reconstruction,
    reconstruct,
    reconstruction_psnr,
)

# Ablation rows as SttConfig overrides. Each row sets every switch explicitly, so a row means
# the same thing whatever the defaults become.
TABLE1_ROWS: dict[str, dict[str, Any]] = {
    # Single-level reconstruction at res4 (stride 8, r = 6): the plain reconstruction baseline.
    "rec_res4_only": {
        "levels": ("res4",), "radii": (6,), "reconstruction": True,
        "local_distill": False, "global_distill": False,
    },
    # Pyramid reconstruction L_rec^p at res3 + res4 (STT Eq. 7), no distillation.
    "pyramid": {
        "levels": ("res3", "res4"), "radii": (12, 6), "reconstruction": True,
        "local_distill": False, "global_distill": False,
    },
    # + local correlation distillation on every target position (STT Eq. 9 without STT Eq. 8).
    "pyramid+lc_without_selection": {
        "levels": ("res3", "res4"), "radii": (12, 6), "reconstruction": True,
        "local_distill": True, "selection": "none", "global_distill": False,
    },
    # + local correlation distillation with entropy-based selection, L_lc^e (STT Eq. 8-9).
    "pyramid+lc": {
        "levels": ("res3", "res4"), "radii": (12, 6), "reconstruction": True,
        "local_distill": True, "selection": "shannon", "global_distill": False,
    },
    # Single-level reconstruction + global correlation distillation L_gc (STT Eq. 2-3) alone.
    "rec_res4+gc": {
        "levels": ("res4",), "radii": (6,), "reconstruction": True,
        "local_distill": False, "global_distill": True,
    },
    # The full objective of STT Eq. 10 (paper reading: Shannon selection, rows summing to 1).
    "pyramid+lc+gc": {
        "levels": ("res3", "res4"), "radii": (12, 6), "reconstruction": True,
        "local_distill": True, "selection": "shannon", "global_distill": True,
    },
    # The full objective with every reference-code quirk (docs/methods.md 2.11), for parity runs.
    "reference_code": {
        "levels": ("res3", "res4"), "radii": (12, 6), "reconstruction": True,
        "rec_loss": "smooth_l1", "rec_weight": 20.0, "local_distill": True, "alpha": 1000.0,
        "selection": "reference_code", "pseudo_label_norm": "mean", "global_distill": True,
        "student_input": "lab",
    },
}


def table1_config(row: str, base: SttConfig | None = None) -> SttConfig:
    """The SttConfig of one ``TABLE1_ROWS`` row, applied on ``base`` (defaults if None).

    Raises:
        ValueError: unknown row.
    """
    if row not in TABLE1_ROWS:
        raise ValueError(f"stt Table 1 row {row!r}: unknown; expected one of {sorted(TABLE1_ROWS)}")
    base = base if base is not None else SttConfig()
    return SttConfig.model_validate({**base.model_dump(), **TABLE1_ROWS[row]})


def required_taps(config: SttConfig) -> tuple[str, ...]:
    """Student taps the objective reads; build the student with exactly these (DDP-safe)."""
    taps: list[str] = list(config.levels) if (config.reconstruction or config.local_distill) else []
    if config.global_distill:
        taps.append("res5")
    return tuple(taps)


def _check_config(config: SttConfig, teacher: nn.Module | None) -> None:
    if len(config.levels) != len(config.radii):
        raise ValueError(
            f"stt.levels {config.levels} and stt.radii {config.radii}: expected one radius per level"
        )
    if not (config.reconstruction or config.local_distill or config.global_distill):
        raise ValueError(
            "stt: every loss term is off; expected reconstruction, local_distill or global_distill"
        )
    if config.local_distill and tuple(config.levels) != ("res3", "res4"):
        raise ValueError(
            f"stt.local_distill needs stt.levels = ('res3', 'res4') (fine, coarse); got {config.levels}"
        )
    if config.global_distill and teacher is None:
        raise ValueError("stt.global_distill is on but no teacher backbone was given")


def _channel(lab: Tensor, frame: int, channel: int | Tensor) -> Tensor:
    """``(B, T, 3, S, S)`` clip -> ``(B, 1, S, S)`` channel(s) of one frame (per clip if a tensor)."""
    image = lab[:, frame]  # (B, 3, S, S)
    if isinstance(channel, int):
        return image[:, channel : channel + 1]
    index = channel.to(image.device).long().view(-1, 1, 1, 1).expand(-1, 1, *image.shape[-2:])
    return image.gather(1, index)


class SttObjective(nn.Module):
    """Student + frozen teacher forward returning the named terms of STT Eq. 10.

    Args:
        config: the ``finetune.stt`` section.
        student: backbone (Lab input, or RGB: ``student_input``) returning ``{"res3", "res4",
            "res5"}`` as needed (``required_taps``); its parameters are the ones trained.
        teacher: frozen stage-1 backbone (RGB input) returning ``{"res5"}``; needed only for
            the global term. Put in eval mode with ``requires_grad`` off here, and kept in
            eval mode by ``train()``.

    Raises:
        ValueError: inconsistent config, or global distillation without a teacher.
    """

    def __init__(self, config: SttConfig, student: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__()
        _check_config(config, teacher)
        self.config = config
        self.student = student
        self.teacher = teacher if config.global_distill else None
        if self.teacher is not None:
            self.teacher.eval()
            self.teacher.requires_grad_(False)  # no gradient to the teacher, ever
        self.radii: dict[str, int] = dict(zip(config.levels, config.radii, strict=True))

    def train(self, mode: bool = True) -> SttObjective:
        """Set the student's mode; the teacher stays in eval mode (frozen BN statistics)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(
        self, lab_dropped: Tensor, lab_clean: Tensor, rgb: Tensor, dropped_ch: int | Tensor,
        diagnose: bool = False,
    ) -> dict[str, Tensor]:
        """One STT step's loss terms.

        Args:
            lab_dropped: ``(B, T, 3, S, S)`` normalised Lab with the a/b channel dropped
                (``drop_ab_channel``): the student's input (as RGB if ``student_input`` is "rgb").
            lab_clean: ``(B, T, 3, S, S)`` normalised Lab before dropout: the targets.
            rgb: ``(B, T, 3, S, S)`` RGB in [0, 1] (the reader's ``rgb``); ImageNet-normalised
                here for the teacher.
            dropped_ch: the channel to reconstruct, 1 (a) or 2 (b): one int or ``(B,)`` per clip.
            diagnose: also measure each term's share of the gradient (``grad_share_<term>``,
                one extra backward pass per term down to the taps; for log steps).

        Returns:
            ``"loss"`` (STT Eq. 10), the enabled terms ``"rec_res3"``, ``"rec_res4"``, ``"lc"``,
            ``"gc"`` (unweighted), diagnostics ``"psnr"`` (finest level, dB), ``"copy_psnr"``
            (copying the reference at the same place, same batch) and ``"psnr_gain"`` (their
            difference), ``"kept_fraction"`` (selection), ``"gc_grid"`` (the res5 grid's
            shorter side, global term), and ``"reconstruction"`` ``(B, 1, S, S)`` (finest
            level, detached, for an image panel).

        Raises:
            ValueError: clips of the wrong shape, or missing backbone taps.
        """
        _check_clips(lab_dropped, lab_clean, rgb)
        b = lab_dropped.shape[0]
        frames = torch.cat([lab_dropped[:, 0], lab_dropped[:, -1]])  # (2B, 3, S, S): ref, target
        if self.config.student_input == "rgb":  # same dropped chroma, in the stage-1 input domain
            frames = normalize_rgb(lab_to_rgb(denormalize_lab(frames)))
        feats = _taps(self.student(frames), required_taps(self.config), "student")
        ref = {k: v[:b] for k, v in feats.items()}
        tgt = {k: v[b:] for k, v in feats.items()}
        out: dict[str, Tensor] = {}
        terms: dict[str, Tensor] = {}  # as weighted in STT Eq. 10
        corrs = self._correlations(tgt, ref)
        if corrs:
            terms["rec"] = self._reconstruction(corrs, lab_clean, dropped_ch, out)
        if self.config.local_distill:
            out["lc"], out["kept_fraction"] = self._local_distillation(corrs["res3"], corrs["res4"])
            terms["lc"] = self.config.alpha * out["lc"]
        if self.teacher is not None:
            out["gc"] = self._global_distillation(tgt["res5"], ref["res5"], rgb)
            out["gc_grid"] = out["gc"].new_tensor(float(min(tgt["res5"].shape[-2:])))
            terms["gc"] = self.config.beta * out["gc"]
        if diagnose:
            shares = gradient_shares(terms, list(feats.values()))
            out.update({f"grad_share_{name}": share for name, share in shares.items()})
        out["loss"] = torch.stack(list(terms.values())).sum()
        return out

    def _correlations(
        self, tgt: dict[str, Tensor], ref: dict[str, Tensor]
    ) -> dict[str, LocalCorrelation]:
        """STT Eq. 4 at every level, once: shared by reconstruction, distillation and selection."""
        if not (self.config.reconstruction or self.config.local_distill):
            return {}
        corrs: dict[str, LocalCorrelation] = {}
        for level, r in self.radii.items():
            c = tgt[level].shape[1]
            scale = 1.0 / math.sqrt(c) if self.config.student_scaling else 1.0
            corrs[level] = local_correlation(tgt[level], ref[level], r, scale)
        return corrs

    def _reconstruction(
        self,
        corrs: dict[str, LocalCorrelation],
        lab_clean: Tensor,
        dropped_ch: int | Tensor,
        out: dict[str, Tensor],
    ) -> Tensor:
        """STT Eq. 5-7 into ``out`` (terms + diagnostics); returns L_rec^p (0 when switched off)."""
        ref_ch = _channel(lab_clean, 0, dropped_ch)  # (B, 1, S, S)
        tgt_ch = _channel(lab_clean, -1, dropped_ch)
        finest = self.config.levels[0]
        out["copy_psnr"] = reconstruction_psnr(copy_reconstruction(corrs[finest], ref_ch), tgt_ch)
        if not self.config.reconstruction:  # diagnostics only, from the distillation's correlations
            with torch.no_grad():
                image = reconstruct(corrs[finest], ref_ch)
            out["psnr"], out["reconstruction"] = reconstruction_psnr(image, tgt_ch), image
            out["psnr_gain"] = out["psnr"] - out["copy_psnr"]
            return lab_clean.new_zeros(())
        losses, images = pyramid_reconstruction(
            corrs, ref_ch, tgt_ch, self.config.rec_loss, self.config.rec_weight
        )
        out.update(losses)
        out["psnr"] = reconstruction_psnr(images[finest], tgt_ch)
        out["psnr_gain"] = out["psnr"] - out["copy_psnr"]
        out["reconstruction"] = images[finest].detach()
        return torch.stack(list(losses.values())).sum()

    def _local_distillation(
        self, fine: LocalCorrelation, coarse: LocalCorrelation
    ) -> tuple[Tensor, Tensor]:
        """STT Eq. 8-9: (L_lc^e, share of target positions kept by the selection)."""
        target = pool_fine_correlation(
            fine.weights.detach(),  # pseudo-label: no gradient through the fine level
            (fine.height, fine.width),
            fine.radius,
            coarse.radius,
            self.config.pseudo_label_norm,
        )
        weights = entropy_selection(
            coarse.raw, (coarse.height, coarse.width), self.config.selection, self.config.keep_fraction
        )
        return local_distillation_loss(coarse.weights, target, weights), weights.mean()

    def _global_distillation(self, student_t: Tensor, student_r: Tensor, rgb: Tensor) -> Tensor:
        """STT Eq. 2-3 against the frozen teacher's res5 correlation of the RGB frames."""
        assert self.teacher is not None  # set whenever global_distill is on (_check_config)
        b = rgb.shape[0]
        with torch.no_grad():  # no gradient to the teacher
            frames = normalize_rgb(torch.cat([rgb[:, 0], rgb[:, -1]]))  # (2B, 3, S, S)
            h = _taps(self.teacher(frames), ("res5",), "teacher")["res5"]
        return global_distillation_loss(
            student_t,
            student_r,
            h[b:],
            h[:b],
            self.config.student_scaling,
            self.config.teacher_tau,
            self.config.teacher_normalize,
        )


def _taps(feats: Any, names: tuple[str, ...], who: str) -> dict[str, Tensor]:
    if not isinstance(feats, dict) or any(name not in feats for name in names):
        got = sorted(feats) if isinstance(feats, dict) else type(feats).__name__
        raise ValueError(f"stt {who} backbone returned {got}; expected a dict with taps {list(names)}")
    return {name: feats[name] for name in names}


def _check_clips(lab_dropped: Tensor, lab_clean: Tensor, rgb: Tensor) -> None:
    shape = tuple(lab_dropped.shape)
    ok = len(shape) == 5 and shape[1] >= 2 and shape[2] == 3
    if not ok or tuple(lab_clean.shape) != shape or tuple(rgb.shape) != shape:
        raise ValueError(
            f"stt objective: clips lab_dropped {shape}, lab_clean {tuple(lab_clean.shape)}, "
            f"rgb {tuple(rgb.shape)}; expected three (B, T>=2, 3, S, S) tensors of one shape"
        )
