"""Can the table rank the models? Pairwise J&F differences with paired bootstrap intervals.

A results table alone cannot say whether 54.1 beats 52.3 on 24 objects. The comparisons that
matter for this pipeline each get a difference and its 95% interval over objects
(:mod:`stcorr.eval.intervals`): does fine-tuning beat its teacher, does pretraining beat an
untrained network, do learned features beat raw Lab pixels, and does anything beat copying the
first mask. A difference whose interval excludes 0 is a ranking the benchmark supports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from stcorr.eval.intervals import Interval, format_interval, paired_difference

# (a, b, what a > b would show): the comparisons the report states, in this order.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("candidate", "teacher", "temporal fine-tuning adds to the spatial encoder"),
    ("teacher", "random", "spatial pretraining beats an untrained network"),
    ("candidate", "lab", "learned features beat raw Lab pixels"),
    ("candidate", "random", "the whole pipeline beats an untrained network"),
    ("lab", "copy", "the benchmark needs correspondence (copying the first mask fails)"),
    ("candidate", "copy", "the candidate tracks at all"),
)


@dataclass(frozen=True)
class Comparison:
    """``a - b`` in J&F over the objects of one benchmark, with its paired 95% interval."""

    benchmark: str
    a: str
    b: str
    meaning: str
    diff: Interval

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "a": self.a, "b": self.b, "meaning": self.meaning,
                **{k: v for k, v in asdict(self.diff).items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        diff = Interval(float(data["value"]), float(data["low"]), float(data["high"]), int(data["n"]))
        return cls(str(data["benchmark"]), str(data["a"]), str(data["b"]), str(data["meaning"]), diff)

    def line(self) -> str:
        """``candidate - teacher: +3.1 [+0.4, +5.9] J&F points over 24 objects (...)``."""
        verdict = ("supported" if self.diff.low > 0 else "reversed" if self.diff.high < 0
                   else "not resolved: the interval contains 0")
        return (f"{self.a} - {self.b}: {format_interval(self.diff, signed=True)} J&F points over "
                f"{self.diff.n} objects; {self.meaning}: {verdict}")


def compare(benchmark: str, scores: Mapping[str, Mapping[str, float]], samples: int = 2000,
            ) -> list[Comparison]:
    """Every comparison of ``COMPARISONS`` whose two models were scored on ``benchmark``.

    Args:
        benchmark: its name (for the record).
        scores: model name -> per-object J&F (``intervals.object_scores``).
        samples: bootstrap resamples.
    """
    return [Comparison(benchmark, a, b, meaning, paired_difference(scores[a], scores[b], samples))
            for a, b, meaning in COMPARISONS if a in scores and b in scores]
