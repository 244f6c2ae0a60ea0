"""Published scores of the released checkpoints, set next to a result: does it reproduce?

The figures (percent) are those each repository gives for its released weights (docs/methods.md 6):
CRW ``pretrained.pth`` (README: DAVIS-2017 val J&F; VIP mIoU and JHMDB PCK as the paper reports
them, quoted in videowalk issue #10) and STT's README model zoo ("reproduced performance in this
repo may be slightly different from the paper"). A checkpoint is matched by its contract:
objective, arch and feature stride.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stcorr.models.contract import ModelContract


@dataclass(frozen=True)
class Published:
    """One checkpoint's published scores: ``{benchmark: {metric: percent}}`` and where from."""

    source: str
    scores: Mapping[str, Mapping[str, float]]


def _row(davis: float, vip: float, pck1: float, pck2: float) -> dict[str, dict[str, float]]:
    return {"davis": {"J&F-Mean": davis}, "vip": {"mIoU": vip}, "jhmdb": {"PCK@0.1": pck1, "PCK@0.2": pck2}}


PUBLISHED: dict[tuple[str, str, int], Published] = {
    ("crw", "resnet18", 8): Published("CRW pretrained.pth (README; VIP, JHMDB: paper)",
                                      _row(67.6, 38.6, 59.3, 84.9)),
    ("stt", "resnet18", 8): Published("STT README, ResNet-18 stride 8", _row(70.7, 40.9, 63.5, 83.1)),
    ("stt", "resnet50", 8): Published("STT README, ResNet-50 stride 8", _row(71.2, 42.2, 63.6, 83.8)),
    ("stt", "resnet18", 4): Published("STT README, ResNet-18 stride 4", _row(73.5, 42.0, 65.6, 83.8)),
    ("stt", "resnet50", 4): Published("STT README, ResNet-50 stride 4", _row(74.1, 42.8, 66.4, 84.4)),
}


def published_for(contract: ModelContract) -> Published | None:
    """The published scores of the checkpoint ``contract`` describes, if any."""
    return PUBLISHED.get((contract.objective, contract.arch, contract.stride))


def reproduction_rows(contract: ModelContract, summaries: Mapping[str, Mapping[str, float]]
                      ) -> list[tuple[str, str, float, float, float]]:
    """``(benchmark, metric, ours, published, ours - published)`` in percent.

    Args:
        contract: the evaluated model's contract.
        summaries: ``{benchmark: {metric: fraction}}`` as the harness returns them.
    """
    found = published_for(contract)
    if found is None:
        return []
    rows = []
    for bench, metrics in found.scores.items():
        for metric, paper in metrics.items():
            value = summaries.get(bench, {}).get(metric)
            if value is not None:
                rows.append((bench, metric, 100.0 * value, paper, 100.0 * value - paper))
    return rows


def reproduction_table(contract: ModelContract, summaries: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of ``reproduction_rows`` under its source; "" when nothing matches."""
    found, rows = published_for(contract), reproduction_rows(contract, summaries)
    if found is None or not rows:
        return ""
    lines = [f"Reproduction against {found.source}:", "",
             "| benchmark | metric | ours | published | difference |", "|---|---|---|---|---|"]
    lines += [f"| {b} | {m} | {ours:.1f} | {paper:.1f} | {diff:+.1f} |" for b, m, ours, paper, diff in rows]
    return "\n".join(lines)
