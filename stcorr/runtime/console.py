"""What a person reads while stcorr runs: stage lines, one progress display per stage, our warnings.

Everything else a pipeline run prints (Ray's worker and controller lines, Prefect's and MLflow's
logging, the C++ lines of Ray's core worker) goes to a per-run log file: :func:`capture` points
file descriptors 1 and 2 of the process at it, so every process started afterwards (Ray, the
Prefect server) writes there too, and the console keeps copies of the original descriptors.

Ray Train workers reach the console through Ray's log forwarding: rank 0 prints lines tagged
with :data:`MARK` (:func:`tagged`), and :func:`attach_ray` puts a printer in the driver that
shows those and our ``stcorr: warning:`` lines and hands every other line to Ray's own printer
(the log file, once captured). Outside a captured run the console is the process's stdout and
stderr. A live display (``rich``) is drawn only on a terminal (and not with ``STCORR_PLAIN=1``);
elsewhere a bar is a plain line every tenth of its total.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

MARK = "\x1estcorr "  # starts a worker line meant for the console (record separator + name)
WARNING = "stcorr: warning: "


class StcorrWarning(UserWarning):
    """A Python warning of ours (an unreadable sample skipped): on the console of a captured
    run, from this process or from a Ray worker, where other libraries' warnings go to the log."""


class _Console:
    """The process's console (one per process, :data:`CONSOLE`); every method is thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.out: TextIO | None = None  # the terminal's stdout once captured, else sys.stdout
        self.err: TextIO | None = None
        self.log: Path | None = None
        self.warned: set[str] = set()
        self.bars: dict[str, Bar] = {}
        self.live: Any = None  # a rich Progress while a bar is open on a terminal

    def stdout(self) -> TextIO:
        return self.out or sys.stdout

    def stderr(self) -> TextIO:
        return self.err or sys.stderr

    def write(self, text: str, *, err: bool = False) -> None:
        """One line on the console (and in the log file when captured)."""
        with self.lock:
            if self.live is not None:
                self.live.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                stream = self.stderr() if err else self.stdout()
                stream.write(text + "\n")
                stream.flush()
            if self.out is not None:  # fd 1 is the log file: keep the console's lines there too
                sys.stdout.write(text + "\n")
                sys.stdout.flush()


CONSOLE = _Console()


def say(text: str) -> None:
    """A line of ours on the console."""
    CONSOLE.write(text)


def warn(text: str) -> None:
    """``stcorr: warning: <text>`` on stderr, once per run however many ranks or threads say it."""
    line = text if text.startswith(WARNING) else WARNING + text
    with CONSOLE.lock:
        if line in CONSOLE.warned:
            return
        CONSOLE.warned.add(line)
    CONSOLE.write(line, err=True)


def error(text: str) -> None:
    """``stcorr: error: <text>`` on stderr (the terminal's, also when the run is captured)."""
    CONSOLE.write(f"stcorr: error: {text}", err=True)


def log_path() -> Path | None:
    """The per-run log file, once :func:`capture` was called."""
    return CONSOLE.log


def capture(path: Path) -> Path:
    """Send this process's (and its future children's) stdout and stderr to ``path``; keep the
    terminal for :func:`say`, :func:`warn`, :func:`error` and the progress display.

    For the rest of the process: the Ray and Prefect processes it starts keep writing to the
    file until they exit. Returns the file's absolute path (printed once on the console).
    """
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with CONSOLE.lock:
        if CONSOLE.log is not None:
            return CONSOLE.log
        sys.stdout.flush()
        sys.stderr.flush()
        CONSOLE.out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        CONSOLE.err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        CONSOLE.log = path
        original = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, StcorrWarning):
                warn(str(message))
            else:
                original(message, category, *args, **kwargs)

        warnings.showwarning = show
    say(f"log: {path} (Ray, Prefect and MLflow messages)")
    return path


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """``<name>: started`` and ``<name>: done in 12.3 s`` (or ``failed after``); closes the
    stage's progress display."""
    say(f"{name}: started")
    began = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        with CONSOLE.lock:
            bar = CONSOLE.bars.get(name)
            if bar is not None:
                bar.close()
        took = duration(time.monotonic() - began)
        say(f"{name}: done in {took}" if ok else f"{name}: failed after {took}")


def duration(seconds: float) -> str:
    """``8.2 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def bar(key: str, total: int, unit: str) -> Bar:
    """The open progress display of ``key`` (a stage), or a new one of ``total`` ``unit``s.

    A bar made with a total closes when its count reaches it, or when its stage ends; one made
    with 0 is grown (evaluation: by each model and benchmark's sequences, :meth:`Bar.grow`, in
    threads that start at different times) and closes only with its stage.
    """
    with CONSOLE.lock:
        found = CONSOLE.bars.get(key)
        if found is None or found.closed:
            found = CONSOLE.bars[key] = Bar(key, total, unit)
        return found


class Bar:
    """Done/total of one stage with its rate, ETA and a key figure (loss, metric)."""

    def __init__(self, label: str, total: int, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.info = ""
        self.closed = False
        self.printed = -1  # the last done count written as a plain line
        self.grown = total == 0  # its total grows: it ends with its stage, not at its total
        self._first: tuple[float, int] | None = None  # (time, done) of the first update
        self._task: Any = None
        if _terminal():
            self._task = _live().add_task(label, total=total or None, unit=unit, info="")

    def grow(self, count: int) -> None:
        with CONSOLE.lock:
            self.total += count
            self._show()

    def update(self, done: int | None = None, *, advance: int = 0, info: str | None = None) -> None:
        """Set or advance the done count; ``info`` is the key figure (``loss 1.234``)."""
        with CONSOLE.lock:
            if self.closed:
                return
            self.done = (self.done if done is None else done) + advance
            self.info = self.info if info is None else info
            if self._first is None:
                self._first = (time.monotonic(), self.done)
            self._show()
            if not self.grown and self.done >= self.total:
                self.close()

    def rate_eta(self) -> str:
        """``1.25 steps/s  ETA 40 s``, measured from the first update on (empty until then)."""
        if self._first is None or self.done <= self._first[1]:
            return ""
        began, start = self._first
        rate = (self.done - start) / max(time.monotonic() - began, 1e-9)
        if self.done >= self.total:
            return f"{rate:.2f} {self.unit}s/s"
        return f"{rate:.2f} {self.unit}s/s  ETA {duration((self.total - self.done) / rate)}"

    def line(self) -> str:
        parts = [self.label, f"{self.unit} {self.done}/{self.total}", self.info, self.rate_eta()]
        return "  ".join(p for p in parts if p)

    def close(self) -> None:
        with CONSOLE.lock:
            if self.closed:
                return
            if self._task is None and self.done and self.printed != self.done:
                say(self.line())
            self.closed = True
            _drop_task(self._task)

    def _show(self) -> None:
        if self._task is not None:
            CONSOLE.live.update(self._task, total=self.total or None, completed=self.done,
                                info=f"{self.info}  {self.rate_eta()}".strip())
            return
        every = max(1, math.ceil(self.total / 10))
        if self.done and self.done != self.printed and (
                self.printed < 0 or self.done % every == 0 or self.done >= self.total):
            self.printed = self.done
            say(self.line())


def _terminal() -> bool:
    return bool(CONSOLE.stdout().isatty()) and not os.environ.get("STCORR_PLAIN")


def _live() -> Any:
    """The rich Progress drawing every open bar (started with the first one)."""
    if CONSOLE.live is None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = Console(file=CONSOLE.stdout(), highlight=False)
        CONSOLE.live = Progress(
            TextColumn("{task.description:<9}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}s"), TextColumn("{task.fields[info]}"),
            console=console, redirect_stdout=False, redirect_stderr=False,  # fd 1 is the log
        )
        CONSOLE.live.start()
    return CONSOLE.live


def _drop_task(task: Any) -> None:
    """Stop the live display once its last bar closed (the bars stay drawn as they ended)."""
    live = CONSOLE.live
    if task is None or live is None:
        return
    if all(b.closed or b._task is None for b in CONSOLE.bars.values()):
        live.stop()
        CONSOLE.live = None


def tagged(kind: str, **fields: Any) -> str:
    """A worker's line for the driver's console: ``say`` (``text``) or ``progress`` (``stage``,
    ``step``, ``total``, ``info``)."""
    return MARK + json.dumps({"kind": kind, **fields})


def show_tagged(line: str) -> bool:
    """Show a worker line on the console if it is ours; return whether it was."""
    if line.startswith(MARK):
        data = json.loads(line[len(MARK):])
        if data["kind"] != "progress":
            say(str(data["text"]))
            return True
        found = bar(data["stage"], int(data["total"]), "step")
        found.update(int(data["step"]), info=str(data.get("info", "")))
        return True
    for sign in (WARNING, f"{StcorrWarning.__name__}: "):
        if sign in line:
            warn(line.split(sign, 1)[1])
            return True
    return False


def attach_ray() -> None:
    """Route the worker lines Ray forwards to this driver: ours to the console (:func:`show_tagged`),
    the rest to Ray's own printer (the log file once captured). Idempotent.

    Ray has no public hook for this; its driver prints through the handler "ray_print_logs" of
    ``ray._private.ray_logging.global_worker_stdstream_dispatcher`` (ray 2.60). Where that is
    missing, Ray's printer stays and tagged lines show as they are.
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    with dispatcher._lock:
        handlers = dict(dispatcher.handlers)
        printer = handlers.get("ray_print_logs")
        if printer is None or getattr(printer, "stcorr", False):
            return

        def route(data: dict[str, Any]) -> None:
            rest = [line for line in data.get("lines", []) if not show_tagged(line)]
            if rest:
                printer({**data, "lines": rest})

        route.stcorr = True  # type: ignore[attr-defined]
        dispatcher.handlers = [(n, route if n == "ray_print_logs" else h) for n, h in dispatcher.handlers]
