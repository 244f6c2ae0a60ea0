"""Streaming WebDataset reader: shards -> augmented clips (STT stage 2) or MoCo views (stage 1).

Shards are split over the global worker id ``rank * num_workers + worker_id`` of the sorted URL
list, as timm's ``reader_wds`` does, with ``rank``/``world_size`` captured in the main process
(never read from the environment inside a worker). One pass (``resampled=False``) yields every
sample exactly once over all ranks and workers. ``resampled=True`` draws shards with replacement
forever and the loader cuts each rank at ``samples_per_rank // batch_size`` batches, so every
DDP rank runs the same number of steps even when shards are uneven (a rank that runs out early
would hang the others' all-reduce).

A sample that cannot be decoded (corrupt video, truncated shard) is skipped with a warning;
the loader never dies for one bad file. Sample format: see ``stcorr/data/shards`` writer
(``json`` + ``mp4``/``avi``/``mkv``/``webm``, or ``f%06d.jpg`` frames, or one image).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from copy import copy
from functools import partial
from itertools import islice
from typing import Any

import numpy as np
import torch

from stcorr.data.augment import (
    ClipSpec,
    ViewSpec,
    augment_clip,
    collate_clips,
    finish_clips,
    load_clip_frames,
    load_image,
    moco_view,
)
from stcorr.data.decode import resolve_backend
from stcorr.data.webdataset_s3 import init_worker, register_s3
from stcorr.runtime import StcorrWarning, is_s3

MAX_FAILURES_IN_A_ROW = 50
Sample = dict[str, Any]
Stage = Callable[[Iterator[Sample], np.random.Generator], Iterator[Sample]]
Finish = Callable[[Sample, np.random.Generator], Sample]


def _global_worker(rank: int, world_size: int) -> tuple[int, int]:
    """(global worker id, global worker count); rank comes from the main process, not env."""
    info = torch.utils.data.get_worker_info()  # set inside DataLoader workers only
    worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * num_workers + worker_id, world_size * num_workers


class ShardStream(torch.utils.data.IterableDataset):
    """An iterable over samples (or batches, after ``batched``) of WebDataset shards.

    Build it with ``make_clip_dataset`` or ``make_image_dataset``; iterate it through
    ``make_loader``. Picklable, so spawn-started workers work too.

    Work is split in two: ``stage`` + ``collate`` run in the loader's workers and produce
    compact uint8 batches; ``finish`` (float conversion, Lab, channel dropout) runs in the
    workers too, unless ``make_loader`` is given a device: then it runs there, which keeps
    worker-to-main transfers 4x smaller and puts the per-pixel Lab maths on the GPU.
    """

    def __init__(self, urls: Sequence[str], *, rank: int, world_size: int, seed: int,
                 shuffle_buffer: int, resampled: bool, samples_per_rank: int | None,
                 stage: Stage, collate: Callable[[list[Sample]], Sample], finish: Finish,
                 s3_endpoint_url: str | None = None) -> None:
        super().__init__()
        if not urls:
            raise ValueError("shard urls: empty list; expected at least one .tar shard URL")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
        if resampled != (samples_per_rank is not None):
            raise ValueError("samples_per_rank: give it exactly when resampled=True "
                             "(one-pass mode yields every sample once, however many that is)")
        self.urls = sorted(urls)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer, self.resampled = shuffle_buffer, resampled
        self.samples_per_rank = samples_per_rank
        self.stage, self.collate, self.finish = stage, collate, finish
        self.s3_endpoint_url = s3_endpoint_url
        self.batch_size: int | None = None
        self.finish_in_worker = True
        self.epoch = 0
        if any(is_s3(url) for url in self.urls):
            register_s3(s3_endpoint_url)

    def set_epoch(self, epoch: int) -> None:
        """Reseed shard order, shuffle buffer and augmentations for a new epoch."""
        self.epoch = epoch

    def batched(self, batch_size: int, finish: bool = True) -> ShardStream:
        """A copy that yields batches of ``batch_size`` (unfinished uint8 ones if not
        ``finish``): a partial last batch in one-pass mode so no sample is lost, full batches
        only when resampled."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        out = copy(self)
        out.batch_size, out.finish_in_worker = batch_size, finish
        return out

    def rng(self, worker: int, stream: int) -> np.random.Generator:
        """The generator of one random stream of one global worker in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, worker, stream])

    def _shard_urls(self, worker: int, workers: int) -> Iterator[str]:
        rng = self.rng(worker, 0)
        if self.resampled:
            while True:
                yield self.urls[int(rng.integers(len(self.urls)))]
        mine = self.urls[worker::workers]  # disjoint and complete over all workers
        yield from (mine[i] for i in rng.permutation(len(mine)))

    def __iter__(self) -> Iterator[Sample]:
        import webdataset as wds

        worker, workers = _global_worker(self.rank, self.world_size)
        shards = ({"url": url} for url in self._shard_urls(worker, workers))
        failures = _Failures()
        samples = failures.count_successes(wds.tarfile_to_samples(handler=failures)(shards))
        samples = _shuffle(samples, self.shuffle_buffer, self.rng(worker, 1))
        items = self.stage(samples, self.rng(worker, 2))
        finish_rng = self.rng(worker, 3)
        if self.batch_size is None:  # direct iteration: finished single items
            for item in items:
                yield {k: v[0] for k, v in self.finish(self.collate([item]), finish_rng).items()}
            return
        for group in _groups(items, self.batch_size, partial_ok=not self.resampled):
            batch = self.collate(group)
            yield self.finish(batch, finish_rng) if self.finish_in_worker else batch


def _groups(items: Iterable[Sample], size: int, partial_ok: bool) -> Iterator[list[Sample]]:
    group: list[Sample] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group and partial_ok:
        yield group


def _shuffle(samples: Iterable[Sample], bufsize: int, rng: np.random.Generator) -> Iterator[Sample]:
    """Reservoir shuffle: every sample comes out exactly once, in a locally random order."""
    buffer: list[Sample] = []
    for sample in samples:
        if len(buffer) < bufsize:
            buffer.append(sample)
            continue
        i = int(rng.integers(bufsize))
        buffer[i], sample = sample, buffer[i]
        yield sample
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


class _Failures:
    """Warn and go on past unreadable data, but give up after ``MAX_FAILURES_IN_A_ROW``
    failures in a row: that is a broken setup (wrong URL, no credentials), not one bad file,
    and a resampled stream would otherwise retry forever. (webdataset's own
    ``warn_and_continue`` also sleeps 0.5 s per warning.)"""

    def __init__(self) -> None:
        self.in_a_row = 0

    def __call__(self, err: Exception, where: str = "shard") -> bool:
        self.in_a_row += 1
        if self.in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise RuntimeError(f"{where}: {self.in_a_row} reads in a row failed; "
                               f"last error: {err}") from err
        warnings.warn(f"skipped unreadable {where}: {err}", StcorrWarning, stacklevel=2)
        return True

    def count_successes(self, items: Iterable[Sample]) -> Iterator[Sample]:
        for item in items:
            self.in_a_row = 0
            yield item


def _readable(samples: Iterator[Sample], load: Callable[[Sample], Sample]) -> Iterator[Sample]:
    """``load`` each sample, skipping (with a warning) the ones that fail."""
    failures = _Failures()
    for sample in samples:
        try:
            item = load(sample)
        except Exception as err:  # one unreadable file must not end a training run
            failures(err, f"sample {sample.get('__url__', '?')}:{sample.get('__key__', '?')}")
            continue
        failures.in_a_row = 0
        yield item


# ---------------------------------------------------------------- clips (STT stage 2, CRW)


def _clip_stage(spec: ClipSpec, threads: int, decoder: str, samples: Iterator[Sample],
                rng: np.random.Generator) -> Iterator[Sample]:
    def load(sample: Sample) -> Sample:
        frames, indices = load_clip_frames(sample, spec, rng, threads, decoder)
        clip, crop = augment_clip(frames, spec, rng)  # (T, 3, S, S) uint8
        return {"rgb": clip, "key": sample["__key__"], "frame_index": indices, "crop": crop}

    return _readable(samples, load)


def make_clip_dataset(urls: Sequence[str], *, rank: int, world_size: int, clip: ClipSpec,
                      seed: int, shuffle_buffer: int = 64, resampled: bool = False,
                      samples_per_rank: int | None = None, decode_threads: int = 1,
                      decoder: str = "auto", s3_endpoint_url: str | None = None) -> ShardStream:
    """Clips from video shards. Unbatched items: ``rgb (T,3,S,S)`` float in [0, 1], ``lab``
    (normalised, if ``clip.lab``), ``lab_dropped`` + ``drop_channel`` (if
    ``clip.channel_dropout``), ``key``, ``frame_index (T,)`` and ``crop (5,)`` = top, left,
    height, width, flipped (what was drawn, for debugging). After ``make_loader`` the same
    with a leading B.

    Args:
        urls: shard URLs (local paths or ``s3://bucket/key``).
        rank, world_size: this process's DDP rank and the number of ranks.
        shuffle_buffer: samples held for shuffling (one video sample is a few MB in memory).
        resampled: draw shards with replacement forever; needs ``samples_per_rank``.
        decode_threads: decoder threads per worker (1: the loader's workers are the parallelism).
        decoder: video decoder, ``auto``, ``decord`` or ``pyav`` (``decode.open_video``).
    """
    resolve_backend(decoder)  # fail here, not once per sample inside the workers
    return ShardStream(urls, rank=rank, world_size=world_size, seed=seed,
                       shuffle_buffer=shuffle_buffer, resampled=resampled,
                       samples_per_rank=samples_per_rank,
                       stage=partial(_clip_stage, clip, decode_threads, decoder),
                       collate=collate_clips,
                       finish=partial(finish_clips, clip), s3_endpoint_url=s3_endpoint_url)


# ---------------------------------------------------------------- images (MoCo v2, STT stage 1)


def _image_stage(size: int, views: ViewSpec, samples: Iterator[Sample],
                 rng: np.random.Generator) -> Iterator[Sample]:
    def load(sample: Sample) -> Sample:
        image = load_image(sample)  # (3, H, W) uint8
        return {"q": moco_view(image, size, rng, views), "k": moco_view(image, size, rng, views),
                "key": sample["__key__"]}

    return _readable(samples, load)


def _collate_views(items: list[Sample]) -> Sample:
    return {"q": torch.stack([item["q"] for item in items]),  # (B, 3, S, S)
            "k": torch.stack([item["k"] for item in items]),
            "key": [item["key"] for item in items]}


def make_image_dataset(urls: Sequence[str], *, rank: int, world_size: int, size: int,
                       seed: int, shuffle_buffer: int = 512, resampled: bool = False,
                       samples_per_rank: int | None = None,
                       s3_endpoint_url: str | None = None,
                       views: ViewSpec = ViewSpec()) -> ShardStream:
    """Two MoCo v2 views per image: ``q``, ``k`` ``(3, S, S)`` ImageNet-normalised, ``key``.

    Arguments as in ``make_clip_dataset``; ``size`` is the view side S (224 in MoCo), ``views``
    the augmentations.
    """
    import torchvision.transforms.v2.functional  # noqa: F401  import once, before workers fork

    return ShardStream(urls, rank=rank, world_size=world_size, seed=seed,
                       shuffle_buffer=shuffle_buffer, resampled=resampled,
                       samples_per_rank=samples_per_rank, stage=partial(_image_stage, size, views),
                       collate=_collate_views, finish=_as_is, s3_endpoint_url=s3_endpoint_url)


def _as_is(batch: Sample, rng: np.random.Generator) -> Sample:
    return batch  # MoCo views are finished in the workers: jitter and blur need float anyway


# ---------------------------------------------------------------- loader


class EpochLoader:
    """Batches of a ``ShardStream`` (finished here on ``device`` if one is given); in resampled
    mode exactly ``len(self)`` batches per iteration."""

    def __init__(self, loader: torch.utils.data.DataLoader[Sample], dataset: ShardStream,
                 num_batches: int | None, device: torch.device | None) -> None:
        self.loader, self.dataset = loader, dataset
        self.num_batches, self.device = num_batches, device

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch``; call before iterating (workers are started per iteration)."""
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("one-pass shard loader: the batch count is unknown until read")
        return self.num_batches

    def __iter__(self) -> Iterator[Sample]:
        batches: Iterator[Sample] = iter(self.loader)
        if self.num_batches is not None:
            batches = islice(batches, self.num_batches)
        rng = self.dataset.rng(self.dataset.rank, 4)  # stream 4: consumer side of this rank
        for batch in batches:
            if self.device is not None:
                batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                         for k, v in batch.items()}
            yield batch if self.dataset.finish_in_worker else self.dataset.finish(batch, rng)


def make_loader(dataset: ShardStream, batch_size: int, num_workers: int, *,
                device: torch.device | str | None = None) -> EpochLoader:
    """Batch inside the pipeline (DataLoader ``batch_size=None``) and start workers.

    Args:
        dataset: from ``make_clip_dataset`` / ``make_image_dataset``.
        device: where batches are returned (e.g. ``"cuda"``). Given, clips travel from the
            workers as uint8 and are converted to float/Lab on it; None = CPU, all in workers.

    Returns:
        An iterable of batch dicts; resampled datasets give ``samples_per_rank // batch_size``
        batches per iteration on every rank.
    """
    target = torch.device(device) if device is not None else None
    batched = dataset.batched(batch_size, finish=target is None)
    needs_s3 = any(is_s3(url) for url in dataset.urls)
    loader: torch.utils.data.DataLoader[Sample] = torch.utils.data.DataLoader(
        batched, batch_size=None, num_workers=num_workers,
        pin_memory=target is not None and target.type == "cuda",
        worker_init_fn=partial(init_worker, dataset.s3_endpoint_url) if needs_s3 else None)
    num_batches = None
    if dataset.samples_per_rank is not None:
        num_batches = dataset.samples_per_rank // batch_size
        if num_batches < 1:
            raise ValueError(f"samples_per_rank={dataset.samples_per_rank} < batch_size="
                             f"{batch_size}: would give 0 batches per rank")
    return EpochLoader(loader, batched, num_batches, target)
