"""Per-item random generators: item i of a kind depends only on (seed, kind, i).

So generating item 7 gives the same bytes whether 8 or 800 items are generated, and a reader can
regenerate one item's in-memory ground truth without the others.
"""

from __future__ import annotations

import numpy as np

KINDS = {"images": 1, "videos": 2, "davis": 3, "vip": 4, "jhmdb": 5, "footage": 6}


def item_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """Generator for item ``index`` of ``kind`` (a key of ``KINDS``) under the global ``seed``.

    Raises:
        KeyError: unknown kind.
    """
    if kind not in KINDS:
        raise KeyError(f"synthetic item kind: expected one of {sorted(KINDS)}, got {kind!r}")
    entropy = [seed % 2**64, KINDS[kind], index]  # SeedSequence wants non-negative integers
    return np.random.default_rng(np.random.SeedSequence(entropy))
