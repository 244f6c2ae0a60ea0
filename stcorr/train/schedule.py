"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (both papers' recipes)."""

from __future__ import annotations

import math

import torch


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, floor: float = 1e-3
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm up linearly from ``floor * lr`` to ``lr``, then cosine-decay to ``floor * lr``.

    STT's reference config warms up from 0.001 x lr and anneals to 0.001 x lr (docs/methods.md 2.9);
    MoCo v2 uses a plain cosine, which is ``warmup_steps=0``.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return floor + (1.0 - floor) * step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
