"""The papers' label-propagation protocols, as presets of the ``evaluate`` section.

``evaluate.protocol`` picks one; ``custom`` uses the section's keys as set, ``auto`` the
protocol the model's contract prefers (an imported checkpoint records its paper's, see
:mod:`stcorr.models.importers`), else ``custom``. docs/methods.md 3.1:

| protocol | context | top-k | tau  | window | radius DAVIS/JHMDB/VIP | first frame | JHMDB, VIP size |
|----------|---------|-------|------|--------|------------------------|-------------|-----------------|
| crw      | 20      | 10    | 0.05 | circle | 12 / 12 / 12           | free        | 320, 560        |
| stt (s8) | 20      | 10    | 0.07 | square | 12 / 5 / 16            | restricted  | 320, 560        |
| stt (s4) | 20      | 10    | 0.07 | square | 35 / 12 / 35           | restricted  | 320, 560        |

Radii are in feature cells. CRW: README command for ``pretrained.pth`` (``--topk 10 --videoLen 20 --radius 12
--temperature 0.05 --cropSize -1``: DAVIS at full resolution); its README gives no VIP/JHMDB
command, so those use the same settings at the sizes both papers squash to. These are the
``evaluate`` defaults, so ``crw`` and the defaults give the same numbers. STT: ``configs/test/
res18_d{8,4}.py``, whose ``neighbor_range`` (24/10/32 at stride 8, 70/24/70 at stride 4) is the
window's side: the tracker keeps ``|dy|, |dx| <= neighbor_range // 2``, stcorr's square radius.
The footage benchmark follows DAVIS.
"""

from __future__ import annotations

from typing import Any

from stcorr.config import EvaluateConfig
from stcorr.models.contract import ModelContract

_SIZES: dict[str, Any] = {"jhmdb_size": (320, 320), "vip_size": (560, 560)}
_CRW: dict[str, Any] = {"n_context": 20, "topk": 10, "temperature": 0.05, "window": "circle",
                        "radius": 12.0, "restrict_first": False, **_SIZES}
_STT: dict[str, Any] = {"n_context": 20, "topk": 10, "temperature": 0.07, "window": "square",
                        "restrict_first": True, **_SIZES}
STT_NEIGHBOR_RANGE = {8: {"davis": 24, "jhmdb": 10, "vip": 32}, 4: {"davis": 70, "jhmdb": 24, "vip": 70}}


def protocol_settings(protocol: str, benchmark: str, stride: int) -> dict[str, Any]:
    """The ``evaluate`` keys ``protocol`` fixes on ``benchmark`` for features at ``stride``.

    Raises:
        ValueError: an unknown protocol, or ``stt`` at a stride other than 8 or 4.
    """
    if protocol == "crw":
        return dict(_CRW)
    if protocol != "stt":
        raise ValueError(f"evaluate.protocol: expected crw or stt here, got {protocol!r}")
    if stride not in STT_NEIGHBOR_RANGE:
        raise ValueError(f"evaluate.protocol stt: has windows for stride 8 and 4, not {stride}")
    side = STT_NEIGHBOR_RANGE[stride]["davis" if benchmark == "footage" else benchmark]
    return {**_STT, "radius": float(side // 2)}


def chosen(cfg: EvaluateConfig, contract: ModelContract | None) -> EvaluateConfig:
    """``protocol: auto`` made concrete: the contract's preferred protocol, else ``custom``."""
    if cfg.protocol != "auto":
        return cfg
    return cfg.model_copy(update={"protocol": contract.protocol if contract else "custom"})


def apply_protocol(cfg: EvaluateConfig, benchmark: str, stride: int,
                   contract: ModelContract | None = None) -> EvaluateConfig:
    """The section with the protocol's settings for ``benchmark`` in place of its own keys."""
    cfg = chosen(cfg, contract)
    if cfg.protocol == "custom":
        return cfg
    return cfg.model_copy(update=protocol_settings(cfg.protocol, benchmark, stride))
