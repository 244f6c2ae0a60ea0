"""Bootstrap intervals and paired comparisons against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from stcorr.eval.intervals import Interval, format_interval, mean_interval, object_scores, paired_difference
from stcorr.eval.ranking import compare


def _scores(values: list[float]) -> dict[str, float]:
    return {f"seq-{i // 2:03d}_{i % 2 + 1}": v for i, v in enumerate(values)}


def test_object_scores_average_j_and_f() -> None:
    rows = [{"Sequence": "a_1", "J-Mean": 0.5, "F-Mean": 0.7},
            {"Sequence": "a_2", "J-Mean": 0.2, "F-Mean": 0.0}]
    assert object_scores(rows) == pytest.approx({"a_1": 0.6, "a_2": 0.1})


def test_a_model_against_itself_is_exactly_zero() -> None:
    scores = _scores(list(np.random.default_rng(0).uniform(0, 1, 24)))
    assert paired_difference(scores, scores) == Interval(0.0, 0.0, 0.0, 24)


def test_constant_scores_have_a_point_interval_and_the_interval_covers_the_mean() -> None:
    assert mean_interval(_scores([0.4] * 10)) == Interval(pytest.approx(0.4), pytest.approx(0.4),
                                                          pytest.approx(0.4), 10)
    values = np.random.default_rng(1).uniform(0, 1, 40)
    interval = mean_interval(_scores(list(values)))
    assert interval.value == pytest.approx(values.mean())
    assert interval.low < values.mean() < interval.high
    # the percentile bootstrap of a mean has about the normal width 2 * 1.96 * sd / sqrt(n)
    width = 2 * 1.96 * values.std() / np.sqrt(len(values))
    assert interval.high - interval.low == pytest.approx(width, rel=0.15)
    assert mean_interval(_scores(list(values))) == interval  # seeded: same scores, same interval


def test_paired_bootstrap_removes_shared_difficulty() -> None:
    """b = a - 0.05 on every object: the paired difference is exactly 0.05, however spread a is,
    while the two unpaired intervals overlap."""
    a = _scores(list(np.random.default_rng(2).uniform(0.1, 0.9, 30)))
    b = {k: v - 0.05 for k, v in a.items()}
    diff = paired_difference(a, b)
    assert (diff.value, diff.low, diff.high) == pytest.approx((0.05, 0.05, 0.05))
    assert diff.excludes_zero()
    assert mean_interval(a).low < mean_interval(b).high  # unpaired, the ranking would not show


def test_compare_states_the_pairs_that_matter_in_order() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.8, 20)
    scores = {name: _scores(list(base + shift)) for name, shift in
              (("candidate", 0.1), ("teacher", 0.0), ("random", -0.1), ("lab", 0.05), ("copy", -0.3))}
    found = compare("footage", scores)
    assert [(c.a, c.b) for c in found] == [("candidate", "teacher"), ("teacher", "random"),
                                           ("candidate", "lab"), ("candidate", "random"),
                                           ("lab", "copy"), ("candidate", "copy")]
    first = found[0]
    assert first.diff.value == pytest.approx(0.1) and "supported" in first.line()
    assert first.line().startswith("candidate - teacher: +10.0 [+10.0, +10.0] J&F points over 20 objects")
    assert compare("footage", {"candidate": scores["candidate"]}) == []
    assert format_interval(Interval(-0.031, -0.05, -0.01, 5), signed=True) == "-3.1 [-5.0, -1.0]"


def test_disjoint_objects_are_an_error() -> None:
    with pytest.raises(ValueError, match="share no scored object"):
        paired_difference({"a_1": 0.5}, {"b_1": 0.5})
    with pytest.raises(ValueError, match="no per-object scores"):
        mean_interval({})
