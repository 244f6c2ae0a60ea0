"""One ``stcorr run`` as a subprocess with a time stamp on every stdout line (the orchestration
benchmark's raw material), recorded to JSON so that a kept folder can be analysed again."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

FIRST_LINE = re.compile(r"^pipeline (\w+): MLflow run (\w+)")


@dataclass
class Launch:
    """One ``stcorr run`` process: when it started (epoch s), its wall time and stdout lines."""

    started: float
    wall_s: float
    pipeline_id: str
    lines: list[tuple[float, str]]

    def marker(self, pattern: str, last: bool = False) -> float | None:
        """Epoch time of the first (or last) stdout line in which ``pattern`` is found."""
        hits = [t for t, line in self.lines if re.search(pattern, line)]
        return (hits[-1] if last else hits[0]) if hits else None


def launch(cmd: list[str], cwd: Path, tag: str, timeout: int) -> Launch:
    """Run ``cmd`` in ``cwd``; time stdout lines as they come; stderr to ``<tag>.stderr``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # line times mean something
    lines: list[tuple[float, str]] = []
    with open(cwd / f"{tag}.stderr", "w") as err:
        started, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                start_new_session=True)  # its own group: a timeout ends all of it
        reader = threading.Thread(target=_read, args=(proc, lines), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
            raise RuntimeError(f"{tag}: `stcorr run` ran past {timeout} s; stopped it") from None
        wall = time.perf_counter() - t0
    reader.join(timeout=30)
    _end_leftovers(proc.pid, tag)
    if proc.returncode != 0:
        tail = (cwd / f"{tag}.stderr").read_text()[-3000:]
        raise RuntimeError(f"{tag}: `stcorr run` exited {proc.returncode}; stderr tail:\n{tail}")
    (cwd / f"{tag}.launch.json").write_text(json.dumps({"started": started, "wall_s": wall, "lines": lines}))
    return load_launch(cwd, tag)


def load_launch(cwd: Path, tag: str) -> Launch:
    """A launch recorded in ``<tag>.launch.json`` (so a kept folder can be read again)."""
    record = json.loads((cwd / f"{tag}.launch.json").read_text())
    lines = [(t, s) for t, s in record["lines"]]
    first = next((m for _, s in lines if (m := FIRST_LINE.match(s))), None)
    if first is None:
        raise RuntimeError(f"{cwd}/{tag}: no 'pipeline <id>: MLflow run <run_id>' line in stdout")
    return Launch(record["started"], record["wall_s"], first.group(1), lines)


def _read(proc: subprocess.Popen[str], lines: list[tuple[float, str]]) -> None:
    assert proc.stdout is not None  # Popen(stdout=PIPE)
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
        print(f"  | {line}", end="", file=sys.stderr, flush=True)


def _end_leftovers(pgid: int, tag: str) -> None:
    """SIGTERM the run's own process group if some of it outlived the run (it would skew the next)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, 0)  # raises when the group is gone
        print(f"{tag}: processes of `stcorr run` outlived it; SIGTERM to group {pgid}", file=sys.stderr)
        os.killpg(pgid, signal.SIGTERM)
