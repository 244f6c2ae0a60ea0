"""webdataset reads ``s3://bucket/key`` shards through boto3 (docs/stack.md 4.4).

webdataset opens URLs through ``gopen_schemes``; the ``s3`` entry here streams a
``get_object`` body with stcorr's :class:`~stcorr.runtime.storage.Storage` (its endpoint,
credentials and one-line errors). The entry lives in the process that registered it, so every
DataLoader worker registers it again (``init_worker``).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from stcorr.runtime import Storage


def init_worker(endpoint_url: str | None, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: gopen_schemes entries are not inherited by spawn-started
    workers (docs/stack.md 4.4)."""
    register_s3(endpoint_url)


def _open_s3(storage: Storage, url: str, mode: str = "rb", bufsize: int = 8192,
             **kw: Any) -> Any:
    if mode != "rb":
        raise ValueError(f"{url}: s3 shards are read-only here; got mode {mode!r}")
    return storage.open_read(url)  # streaming get_object body; one-line StorageError on failure


def register_s3(endpoint_url: str | None = None) -> None:
    """Teach webdataset to open ``s3://bucket/key`` with boto3 (docs/stack.md 4.4).

    Call in the main process and in every DataLoader worker (``make_loader`` does both).

    Args:
        endpoint_url: S3 API endpoint (MinIO, moto); default ``STCORR_S3_ENDPOINT_URL``, then
            ``AWS_ENDPOINT_URL``, then AWS itself.
    """
    import webdataset as wds

    endpoint = (endpoint_url or os.environ.get("STCORR_S3_ENDPOINT_URL")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    wds.gopen_schemes["s3"] = partial(_open_s3, Storage(endpoint_url=endpoint))
