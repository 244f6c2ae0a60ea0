"""The stage lease (one runner per fingerprint across processes) and clean stops on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stcorr.runtime import Storage, interrupt, locks

HOLD = """
import sys, time
from stcorr.runtime import locks
from stcorr.runtime.storage import Storage
with locks.lease(Storage(), sys.argv[1], poll_s=0.05):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(url: str, seconds: float) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", HOLD, url, str(seconds)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lease_waits_for_a_live_holder_in_another_process(tmp_path: Path) -> None:
    url = str(tmp_path / "locks" / "pretrain.json")
    holder = _holder(url, 1.5)
    waits: list[dict] = []
    began = time.monotonic()
    with locks.lease(Storage(), url, on_wait=waits.append, poll_s=0.05):
        waited = time.monotonic() - began
        assert json.loads(Path(url).read_text())["pid"] == os.getpid()
    assert holder.wait(timeout=10) == 0
    assert waited > 0.5 and [w["pid"] for w in waits] == [holder.pid]
    assert not Path(url).exists()  # released


def test_lease_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    url = str(tmp_path / "locks" / "finetune.json")
    holder = _holder(url, 60)
    holder.kill()  # SIGKILL: no chance to release
    holder.wait(timeout=10)
    assert Path(url).exists()
    began = time.monotonic()
    with locks.lease(Storage(), url, poll_s=0.05):
        assert time.monotonic() - began < 5  # same host, dead pid: no need to wait for expiry


def test_lease_with_a_stale_heartbeat_from_another_host_expires(tmp_path: Path) -> None:
    url = tmp_path / "lock.json"
    stale = {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - locks.EXPIRES_S - 1}
    url.write_text(json.dumps(stale))
    with locks.lease(Storage(), str(url), poll_s=0.05):
        assert json.loads(url.read_text())["host"] != "elsewhere"
    fresh = {**stale, "heartbeat": time.time()}
    url.write_text(json.dumps(fresh))
    taken = threading.Event()

    def take() -> None:
        with locks.lease(Storage(), str(url), poll_s=0.05):
            taken.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert not taken.wait(0.5)  # a live holder elsewhere: wait
    url.unlink()  # it releases
    assert taken.wait(5)
    thread.join(5)


def test_first_signal_asks_stages_to_stop_second_one_raises() -> None:
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    asked: list[str] = []
    try:
        interrupt.install()
        with interrupt.stoppable("finetune", lambda: asked.append("finetune")):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs between bytecodes of this thread
            assert asked == ["finetune"] and interrupt.stopped("finetune") == signal.SIGTERM
            with pytest.raises(interrupt.Interrupted, match="SIGINT") as second:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            assert second.value.signum == signal.SIGINT
        with interrupt.stoppable("finetune", lambda: asked.append("again")):
            assert interrupt.stopped("finetune") is None  # a new block starts afresh
        interrupt.install()  # nothing stoppable running: the first signal raises at once
        with pytest.raises(interrupt.Interrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
