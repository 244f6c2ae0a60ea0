"""Writing WebDataset tar shards: deterministic split, atomic landing, per-shard resume records.

Shard ``i`` holds ``items[i*n:(i+1)*n]`` and is called ``<prefix>-<i:06d>.tar``. Each tar is
written to a local temporary file with ``webdataset.TarWriter`` (fixed member mtimes, so the same
inputs give byte-identical tars), hashed, and only then uploaded or renamed into place. Right
after it lands, ``<prefix>-<i:06d>.tar.json`` records its sha256 and an input fingerprint; a run
that died halfway is resumed by reusing every shard whose record, fingerprint and sha256 agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stcorr.config import ShardConfig
from stcorr.data.manifest import ShardRecord, sha256_of, sha256_stream
from stcorr.data.sources import BadInput, SourceItem, encode_sample, source_fingerprint
from stcorr.runtime import Storage, StorageNotFoundError, is_s3

RECORD_SUFFIX = ".json"  # shard record: <shard>.tar.json
TAR_MTIME = 0.0  # fixed member mtime: reproducible tars, so a re-run's sha256 matches


@dataclass(frozen=True)
class ShardJob:
    """One shard to produce: its index, destination URL and inputs."""

    index: int
    url: str
    items: tuple[SourceItem, ...]


def shard_name(prefix: str, index: int) -> str:
    """``images-000003.tar`` for prefix ``images`` and index 3."""
    return f"{prefix}-{index:06d}.tar"


def plan_shards(items: Sequence[SourceItem], out_url: str, prefix: str, samples_per_shard: int,
                storage: Storage) -> list[ShardJob]:
    """Split ``items`` into shards of ``samples_per_shard``: shard i = items[i*n:(i+1)*n]."""
    n = samples_per_shard
    return [ShardJob(i, storage.join(out_url, shard_name(prefix, i)),
                     tuple(items[i * n:(i + 1) * n]))
            for i in range((len(items) + n - 1) // n)]


def content_config(cfg: ShardConfig) -> dict[str, object]:
    """The config fields that change a shard's bytes (not its size, parallelism or bad limit)."""
    fields: dict[str, object] = {"video_format": cfg.video_format,
                                 "max_video_frames": cfg.max_video_frames,
                                 "image_max_side": cfg.image_max_side}
    if cfg.video_format == "transcoded":  # only then: shards written before these keys stay valid
        fields |= {"video_keyint": cfg.video_keyint, "video_short_side": cfg.video_short_side,
                   "video_crf": cfg.video_crf}
    return fields


def inputs_fingerprint(items: Sequence[SourceItem], cfg: ShardConfig) -> str:
    """sha256 of a shard's input files (names, sizes, mtimes, order) and its content config."""
    payload = {"items": [i.name for i in items], "files": source_fingerprint(items),
               "config": content_config(cfg)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def write_shard(items: Sequence[SourceItem], url: str, storage: Storage, cfg: ShardConfig, *,
                inputs: str | None = None) -> ShardRecord:
    """Write one tar shard of ``items`` to ``url`` atomically, then its ``.tar.json`` record.

    Corrupt inputs (``BadInput``) are skipped and listed in the record's ``bad``.

    Args:
        items: the shard's inputs, in order.
        url: destination (local path or ``s3://``).
        storage: where to write.
        cfg: shard config (video format, frame cap, image size cap).
        inputs: precomputed ``inputs_fingerprint(items, cfg)``.

    Returns:
        The shard's record.
    """
    import webdataset as wds

    bad: list[dict[str, str]] = []
    samples = 0
    with tempfile.TemporaryDirectory(prefix="stcorr-shard-") as tmp:
        local = Path(tmp) / "shard.tar"
        with open(local, "wb") as stream, wds.TarWriter(stream, encoder=False,
                                                        mtime=TAR_MTIME) as writer:
            for item in items:
                try:
                    sample = encode_sample(item, video_format=cfg.video_format,
                                           max_video_frames=cfg.max_video_frames,
                                           image_max_side=cfg.image_max_side,
                                           video_keyint=cfg.video_keyint,
                                           video_short_side=cfg.video_short_side,
                                           video_crf=cfg.video_crf)
                except BadInput as err:
                    bad.append({"source": item.name, "reason": err.reason})
                    continue
                writer.write(sample)
                samples += 1
        with open(local, "rb") as written:
            digest = sha256_stream(written)
        size = local.stat().st_size
        storage.write_file(url, local)
    record = ShardRecord(url=url, samples=samples, bytes=size, sha256=digest, bad=tuple(bad),
                         inputs=inputs if inputs is not None else inputs_fingerprint(items, cfg))
    storage.write_bytes(url + RECORD_SUFFIX, json.dumps(record.to_dict(), sort_keys=True).encode())
    return record


def reusable_record(url: str, storage: Storage, inputs: str) -> ShardRecord | None:
    """The record of an already written shard at ``url`` if it can be trusted, else None.

    Trusted means: the ``.tar.json`` record exists and parses, was written for the same inputs
    fingerprint, and the tar is there with the recorded sha256.
    """
    try:
        record = ShardRecord.from_dict(json.loads(storage.read_bytes(url + RECORD_SUFFIX)))
    except (StorageNotFoundError, ValueError, KeyError, TypeError):
        return None
    if record.inputs != inputs or record.url != url:
        return None
    try:
        return record if sha256_of(url, storage) == record.sha256 else None
    except StorageNotFoundError:
        return None


def ensure_shard(job: ShardJob, storage: Storage, cfg: ShardConfig) -> tuple[ShardRecord, bool]:
    """Reuse shard ``job`` if a trusted copy exists, else write it; the body of one Ray task.

    Returns:
        ``(record, reused)``.
    """
    inputs = inputs_fingerprint(job.items, cfg)
    record = reusable_record(job.url, storage, inputs)
    if record is not None:
        return record, True
    return write_shard(job.items, job.url, storage, cfg, inputs=inputs), False


def remove_stale_shards(out_url: str, prefix: str, count: int, storage: Storage) -> list[str]:
    """Delete ``<prefix>-<i>.tar`` and its record for ``i >= count`` (from a bigger earlier run)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d{{6}})\.tar(?:{re.escape(RECORD_SUFFIX)})?$")
    removed = []
    for url in storage.list(out_url):
        match = pattern.search(url.rsplit("/", 1)[-1])
        if match and int(match.group(1)) >= count and _same_folder(url, out_url):
            storage.delete(url)
            removed.append(url)
    return removed


def _same_folder(url: str, out_url: str) -> bool:
    """Whether ``url`` sits directly in ``out_url`` (``Storage.list`` is recursive)."""
    if is_s3(url):
        return url.rsplit("/", 1)[0] == out_url.rstrip("/")
    return os.path.samefile(os.path.dirname(url), out_url)
