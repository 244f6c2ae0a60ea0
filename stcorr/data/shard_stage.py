"""The shard stage: a source folder -> WebDataset shards + ``manifest.json``, a Ray task per shard.

The stage is resumable at two levels (docs/design.md, "Resume and lineage"): when ``manifest.json``
exists for the same source fingerprint and config and every shard verifies, it does nothing;
otherwise each Ray task first looks for a trusted copy of its shard (``shards.ensure_shard``) and
writes only what is missing. The driver writes the manifest last, so a manifest on storage always
describes a complete set of shards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stcorr.config import ComputeConfig, ShardConfig, StorageConfig
from stcorr.data.manifest import (
    MANIFEST_NAME,
    ShardChecksumError,
    ShardRecord,
    build_manifest,
    load_manifest,
    verify_shards,
    write_manifest,
)
from stcorr.data.shards import ShardJob, ensure_shard, plan_shards, remove_stale_shards
from stcorr.data.sources import SourceItem, discover_images, discover_videos, source_fingerprint
from stcorr.runtime import Storage, init_ray, storage_from_config

KINDS = ("images", "videos")
BAD_EXAMPLES = 3  # bad files named in the too-many-bad-inputs error

Progress = Callable[[str], None]


class TooManyBadInputsError(ValueError):
    """More inputs than ``shard.max_bad_fraction`` were corrupt; the good shards are kept."""


@dataclass(frozen=True)
class ShardResult:
    """What one ``shard_source`` call did.

    Attributes:
        manifest_url: where ``manifest.json`` is.
        manifest: its content.
        shards_written: shards written by this call.
        shards_reused: shards kept from an earlier, interrupted run.
        skipped: True when everything was already up to date and nothing ran.
        message: one line for the log.
    """

    manifest_url: str
    manifest: dict[str, Any]
    shards_written: int
    shards_reused: int
    skipped: bool
    message: str


def shard_source(kind: str, source_root: str, out_url: str, cfg: ShardConfig,
                 storage_cfg: StorageConfig, compute_cfg: ComputeConfig, *,
                 progress: Progress | None = None) -> ShardResult:
    """Shard ``source_root`` into ``out_url`` (local folder or ``s3://bucket/prefix``) on Ray.

    Args:
        kind: ``images`` (ImageNet-style folder) or ``videos`` (video files or frame folders).
        source_root: the source folder.
        out_url: output folder; shards are ``<kind>-<i:06d>.tar``, plus ``manifest.json``.
        cfg: the ``shard`` config section.
        storage_cfg: the ``storage`` config section (S3 endpoint, region, retries).
        compute_cfg: the ``compute`` config section (Ray address, CPUs).
        progress: called with one line per finished shard and a final summary.

    Returns:
        A ``ShardResult``.

    Raises:
        ValueError: unknown ``kind``, an empty source, or too many corrupt inputs
            (``TooManyBadInputsError``, raised after the good shards were written).
        FileNotFoundError: ``source_root`` does not exist.
        StorageError: the output cannot be written.
    """
    say: Progress = progress or (lambda _line: None)
    storage = storage_from_config(storage_cfg)
    items = _discover(kind, source_root)[: cfg.max_samples]
    fingerprint = source_fingerprint(items)
    manifest_url = storage.join(out_url, MANIFEST_NAME)
    current = _current_manifest(manifest_url, kind, fingerprint, cfg, storage, say)
    if current is not None:
        message = (f"shards up to date: {len(current['shards'])} shards, "
                   f"{current['total_samples']} samples (source fingerprint {fingerprint[:8]})")
        say(message)
        return ShardResult(manifest_url, current, 0, 0, True, message)

    jobs = plan_shards(items, out_url, kind, cfg.samples_per_shard, storage)
    results = _run_on_ray(jobs, storage, cfg, compute_cfg, say)
    records = [record for record, _ in results]
    _check_bad_fraction(records, len(items), cfg, source_root, out_url)
    manifest = build_manifest(kind, records, source_fingerprint=fingerprint, cfg=cfg)
    write_manifest(manifest_url, manifest, storage)
    remove_stale_shards(out_url, kind, len(jobs), storage)
    reused = sum(1 for _, was_reused in results if was_reused)
    message = (f"shards written: {len(jobs) - reused} new, {reused} reused; {len(jobs)} shards, "
               f"{manifest['total_samples']} samples, {len(manifest['bad_inputs'])} bad inputs "
               f"(source fingerprint {fingerprint[:8]})")
    say(message)
    return ShardResult(manifest_url, manifest, len(jobs) - reused, reused, False, message)


def _discover(kind: str, source_root: str) -> list[SourceItem]:
    if kind == "images":
        return discover_images(source_root, key="data.images")
    if kind == "videos":
        return discover_videos(source_root, key="data.videos")
    raise ValueError(f"kind={kind!r}: unknown shard source kind; expected one of {KINDS}")


def _current_manifest(url: str, kind: str, fingerprint: str, cfg: ShardConfig,
                      storage: Storage, say: Progress) -> dict[str, Any] | None:
    """The manifest at ``url`` if it matches and verifies; otherwise remove it and return None.

    A stale manifest is deleted before any shard is rewritten, so an interrupted re-run never
    leaves a manifest that points at replaced shards.
    """
    if not storage.exists(url):
        return None
    try:
        manifest = load_manifest(url, storage)
    except ValueError as err:
        say(f"re-sharding: {err}")
        storage.delete(url)
        return None
    same = (manifest["kind"] == kind and manifest["source_fingerprint"] == fingerprint
            and manifest["config"] == cfg.model_dump(mode="json"))
    if same:
        try:
            verify_shards(manifest, storage, full=True)
            return manifest
        except ShardChecksumError as err:
            say(f"re-sharding: {err}")
    storage.delete(url)
    return None


def _run_on_ray(jobs: list[ShardJob], storage: Storage, cfg: ShardConfig,
                compute_cfg: ComputeConfig, say: Progress) -> list[tuple[ShardRecord, bool]]:
    """Run ``ensure_shard`` for every job, at most ``parallelism`` at once; results in job order."""
    import ray

    init_ray(compute_cfg)
    task = ray.remote(num_cpus=1)(ensure_shard)
    limit = cfg.parallelism or max(1, int(ray.cluster_resources().get("CPU", 1)))
    queue = list(jobs)
    pending: dict[Any, ShardJob] = {}
    results: dict[int, tuple[ShardRecord, bool]] = {}
    while queue or pending:
        while queue and len(pending) < limit:
            job = queue.pop(0)
            pending[task.remote(job, storage, cfg)] = job
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            job = pending.pop(ref)
            record, reused = results[job.index] = _get(ref)
            say(f"shard {job.index + 1}/{len(jobs)} {'reused' if reused else 'written'}: "
                f"{record.url} ({record.samples} samples, {record.bytes / 1e6:.1f} MB, "
                f"{len(record.bad)} bad)")
    return [results[job.index] for job in jobs]


def _get(ref: Any) -> tuple[ShardRecord, bool]:
    """``ray.get`` that re-raises a task's own exception (one line) instead of Ray's wrapper."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


def _check_bad_fraction(records: list[ShardRecord], total: int, cfg: ShardConfig,
                        source_root: str, out_url: str) -> None:
    bad = [entry for record in records for entry in record.bad]
    if not total or len(bad) / total <= cfg.max_bad_fraction:
        return
    examples = "; ".join(f"{b['source']} ({b['reason']})" for b in bad[:BAD_EXAMPLES])
    raise TooManyBadInputsError(
        f"{source_root}: {len(bad)} of {total} inputs are unreadable ({len(bad) / total:.1%} > "
        f"shard.max_bad_fraction {cfg.max_bad_fraction:.1%}); first: {examples}; "
        f"the good shards are kept in {out_url} (no manifest written)")
