"""The shard manifest: what a shard run produced, and the checks that later runs trust it by.

``manifest.json`` sits at the output root and lists every shard with its sample count, size and
sha256, the inputs that were skipped as corrupt, the source fingerprint and the shard config.
It is written last and atomically, so its presence means the whole set landed; each shard also
gets a ``<shard>.tar.json`` record the moment its tar lands, which is what a resumed run reuses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from stcorr.config import ShardConfig
from stcorr.runtime import Storage, StorageNotFoundError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
HASH_CHUNK = 1 << 20  # stream shards through sha256 1 MiB at a time


class ShardChecksumError(ValueError):
    """A shard is missing or its sha256 differs from the manifest's; the message names both."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{url}: sha256 {actual} does not match the manifest's {expected}; the shard is "
            "corrupt, missing or was replaced: delete it and re-run the shard stage")
        self.url = url
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type[ShardChecksumError], tuple[str, str, str]]:
        return (ShardChecksumError, (self.url, self.expected, self.actual))


@dataclass(frozen=True)
class ShardRecord:
    """One written shard.

    Attributes:
        url: where the tar is.
        samples: samples in it (bad inputs excluded).
        bytes: tar size.
        sha256: hex digest of the tar.
        bad: inputs of this shard that were skipped, ``{"source", "reason"}`` each.
        inputs: fingerprint of the shard's inputs and config; a resumed run reuses the shard
            only when it matches.
    """

    url: str
    samples: int
    bytes: int
    sha256: str
    bad: tuple[dict[str, str], ...] = field(default=())
    inputs: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "samples": self.samples, "bytes": self.bytes,
                "sha256": self.sha256, "bad": list(self.bad), "inputs": self.inputs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        return cls(url=data["url"], samples=int(data["samples"]), bytes=int(data["bytes"]),
                   sha256=data["sha256"], bad=tuple(data.get("bad", ())),
                   inputs=data.get("inputs", ""))


def sha256_stream(stream: BinaryIO) -> str:
    """Hex sha256 of everything left in ``stream``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    while chunk := stream.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of(url: str, storage: Storage) -> str:
    """Hex sha256 of the file or object at ``url``, streamed."""
    with storage.open_read(url) as stream:
        return sha256_stream(stream)


def build_manifest(kind: str, records: list[ShardRecord], *, source_fingerprint: str,
                   cfg: ShardConfig) -> dict[str, Any]:
    """The manifest dict for ``records`` (in shard order)."""
    return {
        "version": MANIFEST_VERSION,
        "kind": kind,
        "shards": [r.to_dict() for r in records],
        "total_samples": sum(r.samples for r in records),
        "total_bytes": sum(r.bytes for r in records),
        "bad_inputs": [bad for r in records for bad in r.bad],
        "source_fingerprint": source_fingerprint,
        "config": cfg.model_dump(mode="json"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_manifest(url: str, manifest: dict[str, Any], storage: Storage) -> None:
    """Write ``manifest`` to ``url`` atomically."""
    storage.write_bytes(url, json.dumps(manifest, indent=1, sort_keys=True).encode())


def load_manifest(url: str, storage: Storage) -> dict[str, Any]:
    """Read and check the manifest at ``url``.

    Raises:
        StorageNotFoundError: no manifest at ``url``.
        ValueError: not a version-1 shard manifest.
    """
    raw = storage.read_bytes(url)
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ValueError(f"{url}: not valid JSON; expected a shard manifest.json") from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{url}: expected a shard manifest with version {MANIFEST_VERSION}")
    missing = {"kind", "shards", "source_fingerprint", "config"} - manifest.keys()
    if missing:
        raise ValueError(f"{url}: shard manifest lacks {sorted(missing)}")
    return manifest


def verify_shards(manifest: dict[str, Any], storage: Storage, *, full: bool = True) -> None:
    """Check that every shard of ``manifest`` is there and unchanged.

    Args:
        manifest: as returned by ``load_manifest``.
        storage: where the shards live.
        full: hash every shard (reads all bytes); False checks existence and size only.

    Raises:
        ShardChecksumError: a shard is missing, has another size, or another sha256.
    """
    for shard in manifest["shards"]:
        url, expected = shard["url"], shard["sha256"]
        try:
            size = storage.size(url)
        except StorageNotFoundError:
            raise ShardChecksumError(url, expected, "missing (no such shard)") from None
        if size != shard["bytes"]:
            raise ShardChecksumError(url, expected, f"unknown (size {size} != {shard['bytes']})")
        if full:
            actual = sha256_of(url, storage)
            if actual != expected:
                raise ShardChecksumError(url, expected, actual)
