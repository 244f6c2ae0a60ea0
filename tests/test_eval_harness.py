"""The evaluation harness on the synthetic benchmarks: features, sequences, Ray, MLflow."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from stcorr.config import ComputeConfig, EvaluateConfig, PipelineConfig, SynthConfig
from stcorr.data.synthetic import generate
from stcorr.eval.features import FeatureExtractor, load_model, native_bf16, resolved_precision
from stcorr.eval.harness import (
    aggregate,
    evaluate_benchmark,
    read_benchmark,
    results_table,
    run_sequences,
    table_row,
)
from stcorr.eval.labels import read_annotation
from stcorr.eval.metrics import davis_sequence_scores, davis_summary, score_davis_folder
from stcorr.eval.readers import PoseSequence
from stcorr.eval.sequence import evaluate_jhmdb
from stcorr.eval.visualize import animated_gif, strip_png
from stcorr.models.resnet import build_backbone, encoder_state_dict
from stcorr.runtime import shutdown_ray
from stcorr.tracking import ModelRefError

# Short context: the synthetic clips have 8 frames; 4 keeps propagation fast on 2 cores.
CFG = EvaluateConfig(n_context=4)
COMPUTE = ComputeConfig(num_cpus=2)


@pytest.fixture(scope="module", autouse=True)
def _stop_ray() -> Iterator[None]:
    yield
    shutdown_ray()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """128x192 frames: at 64x96 the objects are about one stride-8 cell and nothing tracks."""
    synth = SynthConfig(images=0, videos=0, davis_sequences=2, vip_sequences=0, jhmdb_sequences=0,
                        benchmark_frames=8, benchmark_size=(128, 192))
    return generate(tmp_path_factory.mktemp("synth"), synth)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """64x96 frames: enough for the plumbing (Ray, MLflow) and 4x cheaper for a ResNet."""
    synth = SynthConfig(images=0, videos=0, davis_sequences=2, vip_sequences=0, jhmdb_sequences=1,
                        benchmark_frames=5, benchmark_size=(64, 96))
    return generate(tmp_path_factory.mktemp("small"), synth)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised ResNet-18 saved the way the training stages save encoders."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    torch.save(encoder_state_dict(build_backbone("stt_teacher", "resnet18")), path)  # no contract
    return path


def _copy_first(root: Path) -> float:
    """J&F of the trivial tracker that repeats the first mask in every frame."""
    records = []
    for seq in read_benchmark("davis", root):
        gt = np.stack([read_annotation(a) for a in seq.annotations])
        records += davis_sequence_scores(gt, np.repeat(gt[:1], len(gt), axis=0))
    return davis_summary(records)["J&F-Mean"]


def test_lab_baseline_beats_copying_the_first_mask(bench: dict[str, Path], tmp_path: Path) -> None:
    result = evaluate_benchmark("davis", bench["davis"], load_model("lab"), CFG, tmp_path, None)
    copy = evaluate_benchmark("davis", bench["davis"], load_model("copy"), CFG, tmp_path / "c", None)
    assert copy.summary["J&F-Mean"] == pytest.approx(_copy_first(bench["davis"]), abs=1e-12)
    assert result.summary["J&F-Mean"] > copy.summary["J&F-Mean"] + 0.02, (result.summary, copy.summary)
    low, high = result.summary["J&F-Mean-low"], result.summary["J&F-Mean-high"]
    assert low <= result.summary["J&F-Mean"] <= high and low < high
    # the palette PNGs it wrote score the same with the folder scorer (the official tool's path)
    summary, rows = score_davis_folder(bench["davis"], tmp_path / "davis")
    official = {k: v for k, v in result.summary.items() if not k.endswith(("-low", "-high"))}
    assert summary == pytest.approx(official, abs=1e-12)
    with result.files["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["Sequence"] for r in table] == [r["Sequence"] for r in rows]
    assert float(table[0]["J-Mean"]) == pytest.approx(float(rows[0]["J-Mean"]))
    assert len(result.pictures) == 2 * len(read_benchmark("davis", bench["davis"]))


def test_lab_features_are_block_means_of_normalised_lab(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    feats = FeatureExtractor(load_model("lab"))(frames)
    assert feats.shape == (2, 3, 2, 3)
    lab = (rgb2lab(frames / 255.0) - [50.0, 0.0, 0.0]) / [50.0, 127.0, 127.0]  # (T, H, W, 3)
    blocks = lab.reshape(2, 2, 8, 3, 8, 3).mean(axis=(2, 4))  # (T, 2, 3, C)
    plain = blocks / np.linalg.norm(blocks, axis=-1, keepdims=True)
    assert np.abs(feats.permute(0, 2, 3, 1).numpy() - plain).max() < 1e-3


def test_bfloat16_features_point_where_float32_features_do(encoder_file: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    spec = load_model(str(encoder_file), objective="stt")
    full = FeatureExtractor(spec)(frames)
    half = FeatureExtractor(spec, precision="bfloat16")(frames)
    assert half.dtype == torch.float32 and half.shape == full.shape
    cosine = (half * full).sum(1)  # both unit vectors over C
    assert cosine.min().item() > 0.98
    assert not torch.equal(half, full)  # the precision key really reaches the forward pass


def test_auto_precision_is_bf16_where_native_and_recorded(encoder_file: Path, small: dict[str, Path],
                                                          tmp_path: Path) -> None:
    native = native_bf16()
    assert EvaluateConfig().precision == "auto"
    assert resolved_precision("auto") == ("bfloat16" if native else "float32")
    assert [resolved_precision(p) for p in ("float32", "bfloat16")] == ["float32", "bfloat16"]
    spec = load_model(str(encoder_file), objective="stt")
    frames = np.random.default_rng(2).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    auto = FeatureExtractor(spec, precision="auto")
    chosen = FeatureExtractor(spec, precision="bfloat16" if native else "float32")
    assert auto.precision == chosen.precision and torch.equal(auto(frames), chosen(frames))
    assert FeatureExtractor(load_model("lab"), precision="bfloat16").precision == "float32"
    cfg = EvaluateConfig(visualize=False, max_sequences=1, precision="float32")
    evaluate_benchmark("davis", small["davis"], spec, cfg, tmp_path, None)
    assert json.loads((tmp_path / "davis-summary.json").read_text())["precision"] == "float32"


def test_model_specs_follow_the_objective(encoder_file: Path) -> None:
    stt = load_model(str(encoder_file))  # no contract recorded: read as STT (Lab), with a warning
    assert (stt.kind, stt.input, stt.preset, stt.arch, stt.name) == (
        "encoder", "lab", "eval_d8", "resnet18", "candidate")
    crw = load_model(str(encoder_file), objective="crw")
    assert (crw.input, crw.preset) == ("rgb", "crw")
    teacher = load_model(str(encoder_file), objective="moco", name="teacher")
    assert (teacher.input, teacher.preset, teacher.name) == ("rgb", "eval_pool_d8", "teacher")
    student = load_model(str(encoder_file), objective="stt", stride=4)
    assert (student.input, student.preset, student.stride) == ("lab", "eval_d4", 4)
    frames = np.zeros((1, 32, 48, 3), dtype=np.uint8)
    assert FeatureExtractor(student)(frames).shape == (1, 256, 8, 12)
    assert FeatureExtractor(teacher)(frames).shape == (1, 256, 4, 6)
    assert FeatureExtractor(load_model("random"))(frames).shape == (1, 256, 4, 6)
    with pytest.raises(ModelRefError, match=r"nope\.pt: model file not found"):
        load_model("nope.pt")


def test_bad_checkpoint_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="state dict does not match") as err:
        load_model(str(bad))
    assert "\n" not in str(err.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: cannot read checkpoint"):
        load_model(str(tmp_path / "junk.pt"))


def test_jhmdb_identical_frames_return_the_joints_within_a_cell(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    paths = []
    for t in range(3):
        paths.append(tmp_path / f"{t + 1:05d}.png")
        Image.fromarray(frame).save(paths[-1])
    joints = np.stack([rng.uniform([5, 5], [75, 55], (15, 2))] * 3)  # (T, 15, 2) pixels
    seq = PoseSequence("wave/x", tuple(paths), joints)
    # top-1: every cell's best match is itself (cosine 1), so the heat-maps come back unchanged
    cfg = CFG.model_copy(update={"topk": 1})
    result = evaluate_jhmdb(seq, FeatureExtractor(load_model("lab")), cfg, tmp_path / "out",
                            size=(64, 64), visualize=False)
    assert result.keypoints is not None
    pred = result.keypoints[0]
    cell = np.array([80 / 8, 60 / 8])  # one feature cell in original pixels (64 / 8 = 8 cells)
    # rounding to the nearest cell (<= 0.5) + top-3 decoding pulled by two exp(-2) neighbours
    assert np.all(np.abs(pred[1:] - joints[1:]) <= 0.62 * cell)
    assert np.abs(pred[1:] - joints[1:]).max() > 0.1  # the tolerance is not vacuous
    assert np.load(tmp_path / "out" / "wave/x" / "keypoints.npy").shape == (3, 15, 2)


def test_pictures_strip_and_gif() -> None:
    frames = [np.full((40, 60, 3), 20 * i, dtype=np.uint8) for i in range(10)]
    strip = Image.open(io.BytesIO(strip_png(frames, count=4, height=20)))
    assert strip.size == (4 * 30 + 3 * 2, 20)
    gif = Image.open(io.BytesIO(animated_gif(frames)))
    assert gif.format == "GIF" and gif.n_frames == 10 and gif.size == (60, 40)


def test_results_table_shows_every_model() -> None:
    rows = [{"model": "candidate", "davis/J&F-Mean": 0.5, "davis/J-Mean": 0.4, "davis/F-Mean": 0.6},
            {"model": "lab", "davis/J&F-Mean": 0.25}]
    assert results_table(rows).splitlines() == [
        "| model | davis/J&F-Mean | davis/J-Mean | davis/F-Mean |",
        "|---|---:|---:|---:|",
        "| candidate | 0.500 | 0.400 | 0.600 |",
        "| lab | 0.250 | - | - |",
    ]


@pytest.mark.slow
def test_ray_equals_sequential(small: dict[str, Path], encoder_file: Path, tmp_path: Path) -> None:
    spec = load_model(str(encoder_file))
    for name in ("davis", "jhmdb"):
        seqs = read_benchmark(name, small[name])
        args = (name, seqs, spec, CFG.model_copy(update={"visualize": False}))
        one = run_sequences(*args, tmp_path / "seq" / name, None, size=(64, 64))
        many = run_sequences(*args, tmp_path / "ray" / name, COMPUTE, size=(64, 64))
        assert [r.name for r in many] == [s.name for s in seqs]
        assert aggregate(name, many) == aggregate(name, one)
    first = sorted((tmp_path / "seq" / "davis").rglob("*.png"))
    assert first and all(np.array_equal(read_annotation(p), read_annotation(
        tmp_path / "ray" / p.relative_to(tmp_path / "seq"))) for p in first)
    # a sequence failing inside a Ray task surfaces as its own one-line error
    root = tmp_path / "broken"
    shutil.copytree(small["davis"], root)
    seqs = read_benchmark("davis", root)
    frame = root / "JPEGImages/480p/davis-001/00002.jpg"
    frame.write_bytes(b"not a jpeg")  # after the reader's checks: it breaks inside the task
    with pytest.raises(ValueError, match="cannot read frame") as err:
        run_sequences("davis", seqs, spec, CFG, tmp_path / "b", COMPUTE)
    assert str(err.value).startswith(str(frame)) and "\n" not in str(err.value)


@pytest.mark.slow
def test_evaluate_stage_logs_metrics_tables_and_pictures(small: dict[str, Path], encoder_file: Path,
                                                          tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from stcorr.stages import run_evaluate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = PipelineConfig.model_validate({
        "tracking": {"uri": uri, "artifact_location": str(tmp_path / "artifacts")},
        "storage": {"root": str(tmp_path / "work")},
        "compute": {"num_cpus": 2},
        "evaluate": {"benchmarks": ["davis"], "n_context": 4, "baselines": ["lab", "teacher"]},
    })
    out = run_evaluate(cfg, str(encoder_file), str(encoder_file), {"davis": str(small["davis"])},
                       objective="stt")
    assert set(out["summaries"]["davis"]) == {"candidate", "lab", "teacher"}
    assert [(c["a"], c["b"]) for c in out["comparisons"]] == [("candidate", "teacher"), ("candidate", "lab")]
    assert all(c["low"] <= c["value"] <= c["high"] for c in out["comparisons"])
    assert "candidate - lab: " in (Path(out["out_dir"]) / "results.md").read_text()
    client = MlflowClient(uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stcorr.stage"] == "evaluate"
    metrics = run.data.metrics
    for key in ("davis/JF-Mean", "davis/J-Mean", "davis/F-Decay", "lab/davis/JF-Mean",
                "teacher/davis/JF-Mean"):
        assert -1.0 <= metrics[key] <= 1.0, key  # a decay may be negative
    assert metrics["davis/JF-Mean"] == pytest.approx(out["summaries"]["davis"]["candidate"]["J&F-Mean"])

    def listing(path: str) -> list[str]:
        return sorted(Path(f.path).name for f in client.list_artifacts(out["run_id"], path))

    seqs = [s.name for s in read_benchmark("davis", small["davis"])]
    for model in ("candidate", "lab", "teacher"):
        base = f"evaluate/{model}/davis"
        assert listing(base)[:2] == ["davis-per-sequence.csv", "davis-summary.json"]
        assert listing(f"{base}/strips") == [f"{s}-strip.png" for s in seqs]
        assert listing(f"{base}/gifs") == [f"{s}.gif" for s in seqs]
    assert "| candidate |" in out["table"] and "| teacher |" in out["table"]
    ran = resolved_precision(cfg.evaluate.precision)  # the default, auto: bf16 where native
    assert out["precision"] == {"candidate": ran, "teacher": ran}  # no forward pass for Lab

    again = run_evaluate(cfg, str(encoder_file), str(encoder_file), {"davis": str(small["davis"])},
                         objective="stt")
    assert again["run_id"] == out["run_id"] and again["summaries"] == out["summaries"]
    assert table_row("x", []) == {"model": "x"}
