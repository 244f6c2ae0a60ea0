"""The console: plain progress lines, warnings once, worker lines routed; the report's HTML and pictures."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from stcorr.eval.visualize import bright_palette, overlay_ids, strip_png
from stcorr.runtime import console
from stcorr.tracking import to_html


@pytest.fixture(autouse=True)
def fresh_console() -> Iterator[None]:
    """Each test starts with no bars and no warnings seen (the console is per process)."""
    console.CONSOLE.bars.clear()
    console.CONSOLE.warned.clear()
    yield
    console.CONSOLE.bars.clear()
    console.CONSOLE.warned.clear()


def test_a_bar_off_a_terminal_is_a_line_per_tenth_and_closes_at_its_total(
        capsys: pytest.CaptureFixture[str]) -> None:
    with console.stage("finetune"):
        bar = console.bar("finetune", 40, "step")
        for step in range(1, 41):
            bar.update(step, info=f"loss {1 / step:.3f}")
        assert bar.closed
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if "  step " in line]
    assert [s.split()[2] for s in steps] == [f"{n}/40" for n in (1, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40)]
    assert "loss 0.025" in steps[-1] and "steps/s  ETA" in steps[-2]
    assert lines[0] == "finetune: started" and lines[-1].startswith("finetune: done in ")
    assert len(lines) == len(set(lines))


def test_evaluation_grows_one_bar_by_each_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = console.bar("evaluate", 0, "sequence"), console.bar("evaluate", 0, "sequence")
    first.grow(3)
    second.grow(2)
    assert first is second
    for _ in range(5):
        second.update(advance=1)
    assert not first.closed  # another benchmark may still add its sequences
    first.close()
    out = capsys.readouterr().out
    assert out.count("evaluate  sequence 5/5") == 1


def test_worker_lines_ours_to_the_console_once_the_rest_left_for_ray(
        capsys: pytest.CaptureFixture[str]) -> None:
    worker = [console.tagged("say", text="pretrain: starting (2 workers, 4 steps)"),
              console.tagged("progress", stage="pretrain", step=1, total=4, info="loss 1.5000"),
              "stcorr: warning: skipped unreadable sample x",
              "/x/reader.py:175: StcorrWarning: skipped unreadable sample x",  # another rank
              "Failed to query Ray Train Controller actor state."]
    rest = [line for line in worker if not console.show_tagged(line)]
    assert rest == ["Failed to query Ray Train Controller actor state."]
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["pretrain: starting (2 workers, 4 steps)",
                                         "pretrain  step 1/4  loss 1.5000"]
    assert captured.err.splitlines() == ["stcorr: warning: skipped unreadable sample x"]


def test_durations_read_as_a_person_writes_them() -> None:
    assert [console.duration(s) for s in (8.24, 185, 3720)] == ["8.2 s", "3 min 05 s", "1 h 02 min"]


def test_a_labelled_strip_names_model_and_frame_above_each_frame() -> None:
    frames = [np.full((40, 60, 3), 20 * i, dtype=np.uint8) for i in range(10)]
    strip = np.asarray(Image.open(io.BytesIO(strip_png(frames, count=4, height=20, label="candidate"))))
    band = 16
    assert strip.shape == (20 + band, 4 * 30 + 3 * 2, 3)
    caption = strip[:band, :30]
    assert (caption > 200).any() and (caption < 40).any()  # white text on the dark band
    assert (strip[band:, :30] == 0).all()  # frame 0 itself is untouched


def test_overlay_colours_are_bright_and_borders_opaque() -> None:
    frame = np.zeros((20, 20, 3), dtype=np.uint8)  # dark footage: the DAVIS 128-level red vanished
    ids = np.zeros((20, 20), dtype=np.int64)
    ids[5:15, 5:15] = 1
    out = overlay_ids(frame, ids)
    assert tuple(bright_palette()[1]) == (255, 0, 0)
    assert tuple(out[5, 8]) == (255, 0, 0)  # border pixel: the colour itself
    assert out[10, 10, 0] > 128 and tuple(out[0, 0]) == (0, 0, 0)  # inside blended, outside as is


def test_report_html_renders_markdown_and_carries_its_pictures() -> None:
    png = b"\x89PNG fake"
    html = to_html("# r\n\n**davis**: x\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![loss](report/loss.png)\n",
                   {"report/loss.png": png})
    assert "**" not in html and "<strong>davis</strong>" in html and "<table>" in html
    assert 'src="data:image/png;base64,' in html and "report/loss.png" not in html
