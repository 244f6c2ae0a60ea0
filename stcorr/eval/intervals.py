"""Bootstrap intervals for DAVIS J&F and paired differences between models.

DAVIS-2017 J&F-Mean is an average over objects, ``(mean_o J_o + mean_o F_o) / 2 =
mean_o (J_o + F_o) / 2`` (docs/methods.md 4.4), so its uncertainty comes from which objects the
benchmark happens to hold. A percentile bootstrap over objects gives a 95% interval; two models
scored on the same objects are compared by resampling the objects *jointly* (a paired
bootstrap), which removes the objects' shared difficulty from the difference. Resampling is
seeded: the same scores give the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BOOTSTRAP_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap interval, all in the statistic's own units."""

    value: float
    low: float
    high: float
    n: int  # objects it is computed over

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def object_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per-object J&F ``(J-Mean + F-Mean) / 2`` keyed by the DAVIS object name ``<seq>_<k>``."""
    return {str(r["Sequence"]): (float(r["J-Mean"]) + float(r["F-Mean"])) / 2.0 for r in rows}


def _resample_means(values: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Means of ``samples`` bootstrap resamples of the rows of ``values`` ``(N, ...)``."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(samples, len(values)))  # (S, N) object indices
    return np.asarray(np.nanmean(values[picks], axis=1))


def _interval(value: float, resampled: np.ndarray, n: int) -> Interval:
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    low, high = np.nanpercentile(resampled, [tail, 100.0 - tail])
    return Interval(value, float(low), float(high), n)


def mean_interval(scores: Mapping[str, float], samples: int = 2000, seed: int = BOOTSTRAP_SEED) -> Interval:
    """The mean of per-object scores and its 95% percentile-bootstrap interval.

    Raises:
        ValueError: no scores.
    """
    if not scores:
        raise ValueError("bootstrap: no per-object scores to resample")
    values = np.array([scores[k] for k in sorted(scores)], dtype=np.float64)
    return _interval(float(np.nanmean(values)), _resample_means(values, samples, seed), len(values))


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], samples: int = 2000,
                      seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean of ``a - b`` over the objects both scored, with a paired 95% bootstrap interval.

    A model against itself gives exactly ``Interval(0, 0, 0, n)``.

    Raises:
        ValueError: the two share no object (different benchmarks).
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("paired bootstrap: the two models share no scored object")
    diff = np.array([a[k] - b[k] for k in common], dtype=np.float64)
    return _interval(float(np.nanmean(diff)), _resample_means(diff, samples, seed), len(common))


def format_interval(interval: Interval, scale: float = 100.0, signed: bool = False) -> str:
    """``"54.1 [50.2, 58.0]"`` (points), or ``"+3.1 [+0.4, +5.9]"`` for a difference."""
    if not math.isfinite(interval.value):
        return "-"
    spec = "+.1f" if signed else ".1f"
    v, lo, hi = (format(x * scale, spec) for x in (interval.value, interval.low, interval.high))
    return f"{v} [{lo}, {hi}]"
