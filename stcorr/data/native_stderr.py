"""Hold what C libraries print to file descriptor 2 while a decoder opens a file.

decord's C++ reader logs ``ERROR opening: <file>, Invalid data ...`` (and its bundled FFmpeg
``moov atom not found``) straight to fd 2 before it raises; Python's ``sys.stderr`` never sees
it. The error it raises becomes stcorr's one-line message, so on failure the held text is
dropped; on success it is written out unchanged (a warning about a file that did open stays
visible).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()  # fd 2 is process-wide: one holder at a time


@contextlib.contextmanager
def held_native_stderr() -> Iterator[None]:
    """Redirect fd 2 to a temporary file for the block; replay it only if the block succeeds.

    Another thread's stderr output during the block is held too (and dropped on failure):
    keep the block to the open call, not to long decodes.
    """
    with _LOCK, tempfile.TemporaryFile() as held:
        with contextlib.suppress(Exception):
            sys.stderr.flush()  # ours goes out now, not into the held file
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon): nothing to hold
            yield
            return
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                if text := held.read():
                    os.write(2, text)
