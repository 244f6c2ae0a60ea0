"""The data stage end to end through the real console script: synthetic data -> shards -> MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = [
    "data.synth.images=24",
    "data.synth.image_size=48",
    "data.synth.videos=4",
    "data.synth.video_frames=8",
    "data.synth.video_size=[64, 128]",
    "data.synth.davis_sequences=1",
    "data.synth.vip_sequences=1",
    "data.synth.jhmdb_sequences=1",
    "data.synth.benchmark_frames=4",
    "data.synth.benchmark_size=[64, 96]",
    "shard.samples_per_shard=8",
    "compute.num_cpus=2",
]


def _stcorr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("stcorr")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_run_shards_logs_to_mlflow_and_then_says_up_to_date(tmp_path: Path) -> None:
    first = _stcorr("run", "--until", "shard", *_sets(*TINY), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "shards written" in first.stdout
    images = json.loads(next(tmp_path.glob("work/shards/images-*/manifest.json")).read_text())
    videos = json.loads(next(tmp_path.glob("work/shards/videos-*/manifest.json")).read_text())
    assert images["total_samples"] == 24 and len(images["shards"]) == 3
    assert videos["total_samples"] == 4 and videos["bad_inputs"] == []

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'work/mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["stcorr"], output_format="list")
    by_kind = {r.data.tags["stcorr.shard.kind"]: r for r in runs if "stcorr.shard.kind" in r.data.tags}
    parents = [r for r in runs if r.data.tags.get("stcorr.stage") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in by_kind.values())
    assert set(by_kind) == {"images", "videos"}
    for kind, run in by_kind.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["stcorr.stage"] == "shard"
        assert run.data.metrics["samples"] == (24 if kind == "images" else 4)
        root = Path(run.info.artifact_uri.removeprefix("file://"))
        assert json.loads((root / f"shards/{kind}/manifest.json").read_text())["shards"]
        assert (root / f"shards/{kind}/sample_grid.png").stat().st_size > 1000

    second = _stcorr("run", "--until", "shard", *_sets(*TINY), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("shards up to date") == 2
    assert "synthetic data up to date" in second.stdout
    after = mlflow.search_runs(experiment_names=["stcorr"], output_format="list")
    done = [r for r in after if r.data.tags.get("stcorr.fingerprint")]
    assert len(done) == 2  # no second FINISHED run for the same shard stage
    reused = [r for r in after if r.data.tags.get("stcorr.skipped") == "true"]
    assert {r.data.tags["stcorr.reused_run"] for r in reused} == {r.info.run_id for r in by_kind.values()}


def test_synth_writes_the_benchmark_layouts(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    proc = _stcorr("synth", "--out", str(out), *_sets(*TINY), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "davis/ImageSets/2017/val.txt").is_file()
    assert list((out / "davis/Annotations/480p").iterdir())
    assert (out / "vip/VIP_Fine/lists/val_videos.txt").is_file()
    assert list((out / "jhmdb/joint_positions").rglob("joint_positions.mat"))
    assert len(list((out / "videos/mp4").glob("*.mp4"))) == 4


def test_shard_bad_inputs_are_one_line(tmp_path: Path) -> None:
    missing = _stcorr("shard", "images", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 1
    expected = f"data.images: {tmp_path / 'nope'} not found; expected an ImageNet-style folder of images"
    assert missing.stderr.strip().splitlines() == [f"stcorr: error: {expected}"]
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _stcorr("shard", "videos", str(empty), cwd=tmp_path)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and str(empty) in proc.stderr
    bad_key = _stcorr("shard", "images", str(empty), "--set", "shard.samples_per_shrd=3", cwd=tmp_path)
    assert bad_key.returncode == 2
    assert bad_key.stderr.startswith("stcorr: error: shard.samples_per_shrd: unknown key")
