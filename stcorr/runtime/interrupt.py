"""Stop cleanly on SIGINT/SIGTERM: a running training stage checkpoints first, runs end KILLED.

The first signal asks every running training stage to stop: each one writes a stop marker that
its Ray Train workers read between steps, so they save a checkpoint at the current step and
return; the stage then raises :class:`Interrupted` and its MLflow run (and the pipeline's) ends
KILLED. With no training stage running, or on a second signal, :class:`Interrupted` is raised at
once. ``stcorr resume`` continues from the checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

_lock = threading.Lock()
_stoppable: dict[str, Callable[[], None]] = {}  # stage name -> writes that stage's stop marker
_stopped: dict[str, int] = {}  # stage name -> the signal that asked it to stop
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop requested by SIGINT/SIGTERM; the message says what was saved."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


def install() -> None:
    """Handle SIGINT and SIGTERM in this (main) thread as described in the module docstring."""
    for signum in _SIGNALS:
        signal.signal(signum, _handle)


def _handle(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    with _lock:
        pending = {stage: stop for stage, stop in _stoppable.items() if stage not in _stopped}
        _stopped.update(dict.fromkeys(pending, signum))
    if pending:
        from stcorr.runtime.console import CONSOLE

        CONSOLE.write(f"{name}: asking {', '.join(pending)} to checkpoint and stop (send it again to "
                      "stop now)", err=True)
        for request_stop in pending.values():
            request_stop()
        return
    raise Interrupted(f"stopped by {name}", signum)


@contextlib.contextmanager
def stoppable(stage: str, request_stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, a first signal calls ``request_stop`` instead of raising.

    Our handlers are (re)installed for the block: Prefect's flow engine replaces SIGTERM by its
    own, which would abort the stage without a checkpoint.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _handle) for signum in _SIGNALS} if main else {}
    with _lock:
        _stoppable[stage] = request_stop
        _stopped.pop(stage, None)
    try:
        yield
    finally:
        with _lock:
            _stoppable.pop(stage, None)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stopped(stage: str) -> int | None:
    """The signal that asked ``stage`` to stop in its latest :func:`stoppable` block (or None)."""
    with _lock:
        return _stopped.get(stage)
