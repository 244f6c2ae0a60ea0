"""Typed config: loading, precedence, one-line errors with key paths, the CLI's exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from typer.testing import CliRunner

from stcorr.cli import app
from stcorr.config import (
    ConfigError,
    PipelineConfig,
    fingerprint,
    load_config,
    parse_overrides,
    render_reference,
)

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_embedded_profile() -> None:
    cfg = load_config()
    assert cfg.profile == "local"
    assert cfg.compute.ray_address is None
    assert cfg.tracking.uri is not None and cfg.tracking.uri.startswith("sqlite:///")
    assert cfg.data.source == "synthetic"


def test_repo_config_file_validates_for_both_profiles() -> None:
    local = load_config(REPO / "pipeline_config.yaml")
    cluster = load_config(REPO / "pipeline_config.yaml", profile="cluster")
    assert local.storage.root == "work"
    assert cluster.storage.root.startswith("s3://")
    assert cluster.compute.ray_address == "auto"


def test_precedence_yaml_then_env_then_set(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("finetune:\n  lr: 0.1\nshard:\n  max_samples: 7\n")
    env = {"STCORR_FINETUNE__LR": "0.2", "STCORR_SHARD__SAMPLES_PER_SHARD": "9"}
    cfg = load_config(path, ["finetune.lr=0.3"], environ=env)
    assert cfg.finetune.lr == 0.3  # --set beats the environment
    assert cfg.shard.samples_per_shard == 9  # environment beats the default
    assert cfg.shard.max_samples == 7  # YAML beats the default
    assert load_config(path, environ=env).finetune.lr == 0.2  # environment beats YAML


def test_overrides_parse_yaml_scalars() -> None:
    parsed = parse_overrides(["a.b=500", "a.c=1e-4", "d=null", "e.f=[1, 2]", "g.h=crw"])
    assert parsed == {"a": {"b": 500, "c": 1e-4}, "d": None, "e": {"f": [1, 2]}, "g": {"h": "crw"}}


def test_cpu_hour_profile_resolves_with_and_without_the_repo_yaml() -> None:
    from stcorr.models.resnet import build_backbone
    from stcorr.train.health import setup_warnings

    for path in (None, REPO / "pipeline_config.yaml"):
        cfg = load_config(path, profile="cpu-hour")
        assert cfg.profile == "cpu-hour"
        assert cfg.compute.ray_address is None and cfg.storage.root == "work"  # embedded services
        assert cfg.pretrain.moco.queue < cfg.data.synth.images  # no copies of positives as negatives
        assert cfg.data.footage.size == (480, 854)  # real footage at DAVIS 480p, the papers' size
        assert cfg.data.footage.frames == 12  # the clips its README table was measured on
        assert cfg.evaluate.precision == "float32"  # the papers' arithmetic, whatever the demo uses
        assert cfg.finetune.steps > load_config().finetune.steps
        # global distillation is on, on a res5 grid of at least 4x4 at the crop it trains on
        assert cfg.finetune.stt.global_distill
        res5 = build_backbone(cfg.finetune.student_preset, "resnet18", out=("res5",))
        grid = res5(torch.zeros(1, 3, cfg.finetune.crop_size, cfg.finetune.crop_size))["res5"].shape[-1]
        assert grid >= 4
        assert setup_warnings("pretrain", {"queue": cfg.pretrain.moco.queue,
                                           "images": cfg.data.synth.images}) == []
        assert setup_warnings("finetune", {"objective": "stt", "crop": cfg.finetune.crop_size,
                                           "global_distill": True}) == []
    result = CliRunner().invoke(app, ["config", "--profile", "cpu-hour"])
    assert result.exit_code == 0, result.output
    assert "profile: cpu-hour" in result.output and "global_distill: true" in result.output


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("finetune.lr=fast", 'finetune.lr: expected a positive float, got "fast"'),
        ("finetune.lr=-1", "finetune.lr: expected a positive float, got -1"),
        ("shard.max_samples=abc", 'shard.max_samples: expected a positive integer or null, got "abc"'),
        ("finetune.objective=moco", "finetune.objective: expected one of 'stt', 'crw', got \"moco\""),
        ("evaluate.stride=5", "evaluate.stride: expected one of 8, 4, got 5"),
        ("shard.max_bad_fraction=2", "shard.max_bad_fraction: expected a float (>= 0 and <= 1), got 2"),
        ("data.synth.video_size=[1, -1]", "data.synth.video_size[1]: expected a positive integer, got -1"),
        ("evaluate.visualize=maybe", 'evaluate.visualize: expected a boolean (true/false), got "maybe"'),
    ],
)
def test_bad_values_name_the_key_and_the_expectation(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value) == message


def test_unknown_key_is_rejected_with_the_known_keys() -> None:
    with pytest.raises(ConfigError, match=r"^finetune\.lrr: unknown key; known keys here: .*\blr\b"):
        load_config(overrides=["finetune.lrr=1"])
    with pytest.raises(ConfigError, match=r"^finetune\.stt\.alfa: unknown key"):
        load_config(overrides=["finetune.stt.alfa=1"])


def test_cross_field_check_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"finetune\.stt\.radii: expected one radius per level"):
        load_config(overrides=["finetune.stt.radii=[12]"])
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


def test_config_is_frozen() -> None:
    cfg = load_config()
    with pytest.raises(ValueError):
        cfg.finetune.lr = 1.0  # type: ignore[misc]


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = fingerprint(load_config().finetune, "upstream")
    assert a == fingerprint(load_config().finetune, "upstream")
    assert a != fingerprint(load_config(overrides=["finetune.lr=0.1"]).finetune, "upstream")
    assert a != fingerprint(load_config().finetune, "other-upstream")


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _all_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_reference_documents_every_key_with_a_reason() -> None:
    text = render_reference()
    for key in _all_keys(PipelineConfig):
        line = next((ln for ln in text.splitlines() if ln.startswith(f"| `{key}` |")), None)
        assert line is not None, key
        assert line.rstrip("| ").split("|")[-1].strip(), f"{key} has no reason"


def test_committed_reference_is_current() -> None:
    assert (REPO / "docs" / "config-reference.md").read_text() == render_reference()


def test_cli_config_error_exits_2_with_one_line() -> None:
    result = CliRunner().invoke(app, ["config", "--set", "finetune.lr=fast"])
    assert result.exit_code == 2
    assert result.stderr.strip() == 'stcorr: error: finetune.lr: expected a positive float, got "fast"'


def test_console_script_reports_a_missing_config_file(tmp_path: Path) -> None:
    stcorr = Path(sys.executable).with_name("stcorr")
    proc = subprocess.run(
        [str(stcorr), "config", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"stcorr: error: {tmp_path / 'missing.yaml'}: config file not found (expected a YAML file)"
    ]


def test_status_without_pipelines_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--set", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"])
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("stcorr: error: tracking.uri: no pipeline run in")


def test_per_stage_resources_override_the_compute_defaults() -> None:
    sets = ["compute.workers=3", "compute.finetune.workers=8", "compute.finetune.gpus_per_worker=1"]
    cfg = load_config(None, sets)
    finetune, pretrain = cfg.compute.for_stage("finetune"), cfg.compute.for_stage("pretrain")
    assert (finetune.workers, finetune.gpus_per_worker, finetune.cpus_per_worker) == (8, 1.0, 1.0)
    assert (pretrain.workers, pretrain.gpus_per_worker) == (3, 0.0)
    assert cfg.compute.for_stage("evaluate") == cfg.compute  # no overrides for other stages
