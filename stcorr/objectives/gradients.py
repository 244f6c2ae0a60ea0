"""Each loss term's share of the gradient, a learning-health diagnostic (not a paper idea).

A weighted sum of terms can be dominated by one of them while the others only look busy in the
logs: STT Eq. 10 with alpha = 1000 can bury reconstruction, and a global-distillation term on a
2x2 res5 grid is ~0. The share is measured at the backbone's output taps (the tensors every term
reaches), which costs one extra backward pass per term down to the taps only, touches no
parameter gradient, and so is safe under DDP.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gradient_shares(terms: dict[str, Tensor], taps: list[Tensor]) -> dict[str, Tensor]:
    """``||d term / d taps|| / sum_j ||d term_j / d taps||`` for every term (shares sum to 1).

    Args:
        terms: name -> weighted scalar loss term, as it enters the total loss.
        taps: the feature tensors the terms are computed from (graph kept).

    Returns:
        name -> scalar share in [0, 1] (detached); all zero when no term has a gradient.
    """
    needs = [t for t in taps if t.requires_grad]
    norms: dict[str, Tensor] = {}
    for name, term in terms.items():
        if not term.requires_grad or not needs:
            norms[name] = term.new_zeros(())
            continue
        grads = torch.autograd.grad(term, needs, retain_graph=True, allow_unused=True)
        squares = [g.detach().pow(2).sum() for g in grads if g is not None]
        norms[name] = torch.stack(squares).sum().sqrt() if squares else term.new_zeros(())
    total = torch.stack(list(norms.values())).sum() if norms else torch.zeros(())
    return {name: (n / total if total > 0 else n * 0.0) for name, n in norms.items()}
