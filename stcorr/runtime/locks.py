"""One runner per stage fingerprint, across processes and machines sharing a store.

Two pipelines started at once often share stages (the same pretraining under two fine-tuning
settings). Both would train into the same Ray run folder. A lease object in storage, created
atomically (``Storage.create_exclusive``) and refreshed by a heartbeat, lets exactly one of them
run the stage; the other waits, then reuses the finished run. A lease whose holder stopped
refreshing it (the process was killed) expires and is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from stcorr.runtime.storage import Storage, StorageNotFoundError

HEARTBEAT_S = 10.0
EXPIRES_S = 45.0  # a lease not refreshed for this long belongs to a dead process


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}


def _expired(storage: Storage, url: str, now: float) -> bool:
    try:
        lease = json.loads(storage.read_bytes(url))
    except StorageNotFoundError:
        return True
    except ValueError:  # half-written by a killed process
        return True
    if lease.get("host") == socket.gethostname() and not _alive(int(lease.get("pid", 0))):
        return True  # same machine, process gone: no need to wait for the timeout
    return now - float(lease.get("heartbeat", 0.0)) > EXPIRES_S


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def lease(storage: Storage, url: str, *, on_wait: Callable[[dict[str, Any]], None] | None = None,
          poll_s: float = 2.0) -> Iterator[None]:
    """Hold the lease at ``url`` for the block; wait while another live process holds it."""
    waited = False
    while not storage.create_exclusive(url, json.dumps(_holder()).encode()):
        if _expired(storage, url, time.time()):
            storage.delete(url)  # its holder died; racing takers are arbitrated by create_exclusive
            continue
        if not waited and on_wait is not None:
            with contextlib.suppress(StorageNotFoundError, ValueError):
                on_wait(json.loads(storage.read_bytes(url)))
        waited = True
        time.sleep(poll_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(storage, url, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        storage.delete(url)


def _heartbeat(storage: Storage, url: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(Exception):  # a missed beat is retried; expiry allows for several
            storage.write_bytes(url, json.dumps(_holder()).encode())
