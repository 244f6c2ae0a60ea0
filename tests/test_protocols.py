"""``evaluate.protocol``: the papers' propagation settings per benchmark and stride."""

from __future__ import annotations

import pytest

from stcorr.config import EvaluateConfig, load_config
from stcorr.eval.protocols import apply_protocol
from stcorr.models.contract import ModelContract, override_contract

KEYS = ("n_context", "topk", "temperature", "window", "radius", "restrict_first", "vip_size", "jhmdb_size")
BENCHMARKS = ("footage", "davis", "vip", "jhmdb")


def _keys(cfg: EvaluateConfig) -> dict[str, object]:
    return {k: getattr(cfg, k) for k in KEYS}


def test_the_default_protocol_is_todays_defaults() -> None:
    cfg = load_config().evaluate
    assert cfg.protocol == "auto"
    keys_as_set = cfg.model_copy(update={"protocol": "custom"})
    for benchmark in BENCHMARKS:  # no contract, or the pipeline's own (no preference): the keys
        for contract in (None, override_contract("stt"), override_contract("moco")):
            assert apply_protocol(cfg, benchmark, 8, contract) == keys_as_set
        assert _keys(apply_protocol(cfg.model_copy(update={"protocol": "crw"}), benchmark, 8)) == _keys(cfg)
    custom = load_config(overrides=["evaluate.radius=6", "evaluate.protocol=custom"]).evaluate
    assert apply_protocol(custom, "davis", 8, override_contract("stt")).radius == 6


@pytest.mark.parametrize(("stride", "radii"), [(8, (12.0, 5.0, 16.0)), (4, (35.0, 12.0, 35.0))])
def test_stt_protocol_holds_the_papers_windows(stride: int, radii: tuple[float, ...]) -> None:
    """configs/test/res18_d{8,4}.py: neighbor_range 24/10/32 and 70/24/70, a window of +-range // 2."""
    cfg = EvaluateConfig(protocol="stt", radius=3, temperature=0.5, window="circle", vip_size=None)
    got = {b: apply_protocol(cfg, b, stride) for b in ("davis", "jhmdb", "vip", "footage")}
    assert (got["davis"].radius, got["jhmdb"].radius, got["vip"].radius) == radii
    assert got["footage"].radius == got["davis"].radius
    for resolved in got.values():
        assert (resolved.n_context, resolved.topk, resolved.temperature) == (20, 10, 0.07)
        assert (resolved.window, resolved.restrict_first) == ("square", True)
        assert (resolved.jhmdb_size, resolved.vip_size) == ((320, 320), (560, 560))


def test_crw_protocol_holds_the_readme_command() -> None:
    cfg = EvaluateConfig(protocol="crw", radius=3, topk=5, n_context=4, window="square")
    resolved = apply_protocol(cfg, "davis", 8)
    assert (resolved.topk, resolved.n_context, resolved.radius, resolved.temperature) == (10, 20, 12.0, 0.05)
    assert (resolved.window, resolved.restrict_first) == ("circle", False)


def test_an_imported_model_picks_its_papers_protocol_unless_told() -> None:
    stt = ModelContract("stt", "lab", "lab", "resnet18", "eval_d4", 4, "stt_student", "stt")
    assert apply_protocol(EvaluateConfig(), "vip", 4, stt).radius == 35.0
    assert apply_protocol(EvaluateConfig(protocol="crw"), "vip", 4, stt).radius == 12.0
    assert apply_protocol(EvaluateConfig(protocol="custom", radius=7), "vip", 4, stt).radius == 7


def test_reproduction_table_puts_a_result_next_to_the_published_figure() -> None:
    from stcorr.eval.reproduction import reproduction_rows, reproduction_table
    from stcorr.models.importers import contract_for
    from stcorr.tracking import reproduction_section

    crw = contract_for("crw", "resnet18")
    ours = {"davis": {"J&F-Mean": 0.661, "J-Mean": 0.63}, "jhmdb": {"PCK@0.1": 0.6, "PCK@0.2": 0.849}}
    rows = reproduction_rows(crw, ours)
    assert [(b, m) for b, m, *_ in rows] == [("davis", "J&F-Mean"), ("jhmdb", "PCK@0.1"),
                                            ("jhmdb", "PCK@0.2")]
    assert rows[0][2:] == pytest.approx((66.1, 67.6, -1.5))
    assert "| davis | J&F-Mean | 66.1 | 67.6 | -1.5 |" in reproduction_table(crw, ours)
    s4 = contract_for("stt", "resnet50", stride=4)
    assert reproduction_rows(s4, {"vip": {"mIoU": 0.43}})[0][2:] == pytest.approx((43.0, 42.8, 0.2))
    assert reproduction_rows(contract_for("stt", "resnet18", 4), {"davis": {"J&F-Mean": 0.7}})[0][3] == 73.5
    assert reproduction_table(contract_for("moco", "resnet50"), ours) == ""  # nothing published
    evaluate = {"contract_fields": {"candidate": crw.to_dict()},
                "summaries": {"davis": {"candidate": {"J&F-Mean": 0.661}, "lab": {"J&F-Mean": 0.2}}}}
    real = load_config(overrides=["data.source=folders", "data.images=/x", "data.videos=/y"])
    assert reproduction_section(real, evaluate)[0] == "## Does it reproduce?"
    assert reproduction_section(load_config(), evaluate) == []  # synthetic data: no paper numbers
