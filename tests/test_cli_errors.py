"""The CLI's contract: one ``stcorr: error:`` line, exit 2 for usage/config, 1 for runtime/input,
nothing left behind; ``stcorr status`` on a recorded pipeline; help without type noise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stcorr import tracking
from stcorr.cli import app
from stcorr.config import PipelineConfig, load_config
from stcorr.eval.labels import write_palette_png
from stcorr.tracking import lineage, pipeline_status, register_encoder, render_status

FAST = ["--set", "evaluate.n_context=2"]


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _one_line(code: int, stderr: str, expected_code: int, *fragments: str) -> str:
    assert code == expected_code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stcorr: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("args", "fragment"), [
    (["track", "--mask", "m.png", "-m", "lab", "-o", "x"], "track: Missing option '--video'"),
    (["track", "--bogus"], "track: No such option: --bogus"),
    (["trak"], "No such command 'trak'"),
    (["track", "--video", "v", "--mask", "m", "-m", "lab", "-o", "x", "--max-frames", "0"],
     "Invalid value for '--max-frames'"),
    (["status", "a", "b"], "status: Got unexpected extra argument"),
    (["run", "--until", "lunch"], "--until: expected one of shard"),
    (["config", "--set", "finetune.lrr=1"], "finetune.lrr: unknown key"),
    (["evaluate", "-b", "kitti", "--root", ".", "-m", "lab", "-o", "x"], "--benchmark 'kitti': unknown"),
    (["evaluate", "-b", "davis", "--root", ".", "-m", "lab", "-o", "x", "--objective", "dino"],
     "--objective: expected one of"),
    (["import-checkpoint", "x.pth", "--format", "onnx"], "--format 'onnx': unknown"),
])
def test_usage_and_config_errors_are_one_line_exit_2(args: list[str], fragment: str) -> None:
    line = _one_line(*_cli(*args)[::2], 2, fragment)
    assert "╭" not in line and "Usage:" not in line


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> PipelineConfig:
    """A tracking store holding a pipeline recorded as the flow records one (shard, pretrain,
    teacher, finetune, evaluate), and a second pipeline that reused its finetune run."""
    root = tmp_path_factory.mktemp("store")
    cfg = load_config(overrides=[f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
                                 f"tracking.artifact_location={root / 'artifacts'}",
                                 f"storage.root={root / 'work'}"])
    encoder = root / "encoder.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, encoder)
    with lineage.pipeline_run(cfg, "feedc0de"):
        with tracking.stage_run(cfg, "shard", "a" * 64, run_name="shard-images") as run:
            run.set_tags({"stcorr.shard.kind": "images", "stcorr.shard.url": f"{root}/shards/manifest.json"})
        for stage, alias in (("pretrain", None), ("teacher", "teacher"), ("finetune", "candidate")):
            with tracking.stage_run(cfg, stage, stage[0] * 64, run_name=f"{stage}-{stage[0] * 8}") as run:
                register_encoder(run.client, run.run_id, encoder, model_name=cfg.tracking.model_name,
                                 alias=alias, tags={})
                run.log_json({"encoder": str(encoder)}, "stage_output.json")
        with tracking.stage_run(cfg, "evaluate", "e" * 64, run_name="evaluate-eeeeeeee") as run:
            (root / "work/eval/eeee").mkdir(parents=True)
            run.log_json({"out_dir": f"{root}/work/eval/eeee"}, "evaluate/stage_output.json")
    from mlflow import MlflowClient

    finetune = MlflowClient().search_runs(
        [tracking.setup(cfg.tracking)], filter_string="tags.`stcorr.stage` = 'finetune'")[0]
    with lineage.pipeline_run(cfg, "beefcafe"):
        tracking.record_skip(cfg, "finetune", "f" * 64, finetune)
    return cfg


def _sets(cfg: PipelineConfig) -> list[str]:
    return ["--set", f"tracking.uri={cfg.tracking.uri}",
            "--set", f"tracking.artifact_location={cfg.tracking.artifact_location}"]


def test_status_names_each_stage_output_and_the_run_url(store: PipelineConfig) -> None:
    code, out, err = _cli("status", "feedc0de", *_sets(store))
    assert code == 0, err
    head = out.splitlines()[0]
    assert re.match(r"pipeline feedc0de  FINISHED  started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  "
                    r"total (\d+m)?\d+s$", head), head
    assert re.search(r"MLflow run: http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32}", out)
    rows = {line.split()[0]: line for line in out.splitlines()[4:] if line.strip() and line[0] != "("}
    assert len(rows) == 5, out
    assert "models:/stcorr-encoder@candidate (version 3)" in rows["finetune-ffffffff"]
    assert "models:/stcorr-encoder@teacher (version 2)" in rows["teacher-tttttttt"]
    assert "models:/stcorr-encoder/1" in rows["pretrain-pppppppp"]
    assert rows["shard-images"].rstrip().endswith("shards/manifest.json")
    assert rows["evaluate-eeeeeeee"].rstrip().endswith("work/eval/eeee")
    assert all(" FINISHED " in row for row in rows.values())


def test_status_names_the_run_artifacts_where_the_results_folder_is_not_here(store: PipelineConfig) -> None:
    """An s3:// storage root evaluates into a temporary folder on the driver: then the results
    are the copy MLflow holds."""
    folder = Path(store.storage.root) / "eval" / "eeee"
    folder.rename(folder.with_name("elsewhere"))
    try:
        [evaluate] = [s for s in pipeline_status(store, "feedc0de").stages if s.stage == "evaluate-eeeeeeee"]
    finally:
        folder.with_name("elsewhere").rename(folder)
    assert evaluate.output.startswith(Path(str(store.tracking.artifact_location)).as_uri() + "/")
    assert evaluate.output.endswith("/artifacts/evaluate")


def test_status_of_a_reusing_pipeline_shows_the_reused_output(store: PipelineConfig) -> None:
    status = pipeline_status(store, None)  # the latest: beefcafe
    assert status.pipeline_id == "beefcafe"
    [stage] = status.stages
    assert stage.state == "SKIPPED (reused)"
    assert stage.output == "models:/stcorr-encoder@candidate (version 3)"
    text = render_status(status)
    assert "finetune (reused)  SKIPPED (reused)  -" in text


def test_status_of_an_unknown_pipeline_is_one_line_exit_1(store: PipelineConfig) -> None:
    _one_line(*_cli("status", "nope1234", *_sets(store))[::2], 1,
              "pipeline 'nope1234': not found in sqlite:///", "mlflow.db")


def test_status_without_a_store_creates_none(tmp_path: Path) -> None:
    db = tmp_path / "work" / "mlflow.db"
    _one_line(*_cli("status", "--set", f"tracking.uri=sqlite:///{db}")[::2], 1,
              f"no pipeline run in sqlite:///{db} (no such file)")
    assert not db.exists() and not db.parent.exists()


def test_registry_errors_name_the_store(store: PipelineConfig, tmp_path: Path) -> None:
    out = tmp_path / "out"
    track = ["track", "--video", "v.mp4", "--mask", "m.png", "-o", str(out)]  # the model resolves first
    code, _, err = _cli(*track, "-m", "models:/nope@candidate", *_sets(store))
    _one_line(code, err, 1, "models:/nope@candidate: no registered model named 'nope' in the registry at "
              f"{tracking.resolve_uri(store.tracking.uri or '')}")
    code, _, err = _cli(*track, "-m", "models:/stcorr-encoder@champion", *_sets(store))
    _one_line(code, err, 1, "no such alias or version of 'stcorr-encoder' (aliases: candidate, teacher) "
              "in the registry at sqlite:///")
    missing = tmp_path / "none" / "mlflow.db"
    code, _, err = _cli(*track, "-m", "models:/x@teacher", "--set", f"tracking.uri=sqlite:///{missing}")
    _one_line(code, err, 1, f"no registry at sqlite:///{missing} (no such file)")
    assert not missing.parent.exists() and not out.exists()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from stcorr.data.synthetic.writers import write_mp4

    root = tmp_path_factory.mktemp("clip")
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    write_mp4(root / "clip.mp4", frames)
    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[8:20, 10:30] = 1
    write_palette_png(root / "first.png", mask)
    return root / "clip.mp4", root / "first.png"


def test_a_failed_track_removes_only_the_folder_it_created(clip: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import stcorr.eval.track as track

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("propagation failed")

    monkeypatch.setattr(track, "propagate_labels", broken)
    video, mask = clip
    new = tmp_path / "new" / "out"
    _one_line(*_cli("track", "--video", str(video), "--mask", str(mask), "-m", "lab", "-o", str(new),
                    *FAST)[::2], 1, "propagation failed")
    assert not (tmp_path / "new").exists()  # the parent it made went too
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("mine")
    _one_line(*_cli("track", "--video", str(video), "--mask", str(mask), "-m", "lab", "-o", str(kept),
                    *FAST)[::2], 1, "propagation failed")
    assert (kept / "mine.txt").read_text() == "mine"


def test_a_corrupt_video_is_one_line_without_decoder_noise(clip: tuple[Path, Path], tmp_path: Path) -> None:
    video, mask = clip
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:200])
    exe = Path(sys.executable).with_name("stcorr")
    proc = subprocess.run([str(exe), "track", "--video", str(broken), "--mask", str(mask), "-m", "lab",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"stcorr: error: {broken}: cannot open video (corrupt, truncated or empty?); pyav said: "
        f"Invalid data found when processing input: '{broken}'"]
    assert not (tmp_path / "out").exists()


def _commands() -> list[str]:
    from typer.main import get_command

    return sorted(get_command(app).commands)  # type: ignore[attr-defined]


def test_help_has_no_type_noise_and_fitting_examples() -> None:
    for name in _commands():
        code, out, err = _cli(name, "--help")
        assert code == 0, err
        assert not re.search(r"<(bool|str|int|path|list|float)", out), (name, out)
        assert "╭" not in out and "e.g. --set shard.max_samples=500" not in out  # the old shared example
        examples = out.split("Examples:")[1].split("\n") if "Examples:" in out else []
        commands = [line.strip() for line in examples if line.strip()]
        assert commands and all(line.startswith(f"stcorr {name}") for line in commands), (name, out)
    code, out, _ = _cli("--help")
    summaries = out.split("Commands:")[1]
    assert code == 0 and "<bool>" not in out and "..." not in summaries  # none cut short
