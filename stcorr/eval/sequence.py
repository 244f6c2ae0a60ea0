"""Evaluate one benchmark sequence: features -> propagation -> decoding -> metric inputs.

The label-propagation protocols of docs/methods.md 3.1-3.4 (CRW, Jabri et al., NeurIPS 2020,
Sec. 4; STT, Li & Liu, CVPR 2023, Sec. 4.1):

- DAVIS-2017: native resolution; first-frame labels from the first annotation; soft labels
  upsampled to the GT size and argmax'ed; indexed palette PNGs with the GT frame names;
  per-object J/F statistics of the official tool.
- VIP: frames squashed to 560x560; 20 part classes; a confusion matrix over all frames.
- JHMDB: frames squashed to 320x320; 15 Gaussian heat-maps at feature resolution plus a
  background channel (CRW), decoded as the top-3 weighted mean; PCK inputs in pixels.

The ``copy`` baseline skips features and propagation: every frame gets frame 0's labels (its
masks, or its joints), the floor any correspondence must clear.

With ``window: square`` (the STT protocol) first-frame masks are nearest-resized one-hots and
decoded with per-channel min-max normalisation; with ``circle`` (CRW) they are bilinear soft
one-hots, decoded directly. Frame 0 of every prediction is the given GT, as both papers write.
Departure: JHMDB uses CRW's heat-maps and decoding under both windows (STT's 4-pixel Gaussians
at image resolution need the joints before resizing, which this harness does not keep).
Results are small and picklable (scores, counts, keypoints, PNG/GIF bytes): one Ray task
returns one of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from stcorr.config import EvaluateConfig
from stcorr.eval import visualize as vis
from stcorr.eval.features import FeatureExtractor, native_bf16
from stcorr.eval.labels import (
    decode_keypoints,
    first_frame_labels,
    joints_to_heatmaps,
    labels_to_index,
    read_annotation,
    write_palette_png,
)
from stcorr.eval.metrics import VIP_CLASSES, ConfusionMatrix, davis_sequence_scores, pck
from stcorr.eval.propagation import propagate
from stcorr.eval.readers import VOID, MaskSequence, PoseSequence

SQUASH: dict[str, tuple[int, int] | None] = {"davis": None, "vip": (560, 560), "jhmdb": (320, 320)}
JHMDB_TOPK = 3  # CRW decodes the top-3 cells at feature resolution (test_utils.py:55-77)
SCREEN_MIN_CHANNELS = 64  # raw Lab pixels (3-d) tie everywhere in bf16, and cost no GEMM time


@dataclass
class SequenceResult:
    """What one sequence hands back for aggregation and pictures.

    Attributes:
        benchmark, name: where it came from.
        rows: per-sequence CSV rows (DAVIS: one per object, ``<seq>_<k>``).
        records: DAVIS per-object statistics (keys of ``metrics_davis.STATS``).
        confusion: VIP ``(20, 20)`` counts (rows GT, columns prediction).
        keypoints: JHMDB ``(pred, gt)``, each ``(T, 15, 2)`` (x, y) in original pixels.
        strip, animation: PNG and GIF bytes (empty when pictures are off).
        precision: the encoder's arithmetic that ran ("float32" or "bfloat16").
    """

    benchmark: str
    name: str
    frames: int
    seconds: float = 0.0
    rows: list[dict[str, str | float]] = field(default_factory=list)
    records: list[dict[str, float]] = field(default_factory=list)
    confusion: np.ndarray | None = None
    keypoints: tuple[np.ndarray, np.ndarray] | None = None
    strip: bytes = b""
    animation: bytes = b""
    precision: str = "float32"


def load_frames(paths: tuple[Path, ...] | list[Path]) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB frames from image files.

    Raises:
        ValueError: a frame that cannot be decoded (one line naming it).
    """
    frames = []
    for path in paths:
        try:
            with Image.open(path) as img:
                frames.append(np.asarray(img.convert("RGB")))
        except OSError as exc:  # PIL raises UnidentifiedImageError / OSError for bad files
            raise ValueError(f"{path}: cannot read frame ({type(exc).__name__}); expected a "
                             f"readable JPEG/PNG image") from exc
    return np.stack(frames)


def squash(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize every frame to ``size = (H, W)`` ignoring the aspect ratio (bilinear, PIL)."""
    if size is None or frames.shape[1:3] == size:
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((size[1], size[0]),
                                                          Image.Resampling.BILINEAR))
                     for f in frames])


def propagate_labels(feats: Tensor, first: Tensor, cfg: EvaluateConfig) -> Tensor:
    """``propagate`` with the configured protocol; ``(T, K, h, w)`` soft labels.

    ``evaluate.screen`` applies where bf16 is native and the features have at least
    ``SCREEN_MIN_CHANNELS`` channels; elsewhere every affinity is float32 (same labels).
    """
    screened = native_bf16() and feats.shape[1] >= SCREEN_MIN_CHANNELS
    return propagate(feats, first, n_context=cfg.n_context, topk=cfg.topk, radius=cfg.radius,
                     temperature=cfg.temperature, restrict_first=cfg.restrict_first,
                     window=cfg.window, screen=cfg.screen if screened else "off")


def propagate_mask(extractor: FeatureExtractor, frames: np.ndarray, first_ids: np.ndarray,
                   cfg: EvaluateConfig, n_labels: int) -> list[np.ndarray]:
    """Propagate a first-frame id map; per-frame ``(H, W)`` ids at the mask's size.

    Args:
        extractor: the model (the ``copy`` baseline repeats ``first_ids``).
        frames: ``(T, H', W', 3)`` uint8 frames the features are computed on.
        first_ids: ``(H, W)`` ids 0..n_labels-1 of frame 0 (returned as frame 0).
        cfg: propagation parameters and protocol (``window``).
        n_labels: K, background included.
    """
    if extractor.spec.kind == "copy":
        return [first_ids] * len(frames)
    feats = extractor(frames)
    stt = cfg.window == "square"
    first = first_frame_labels(first_ids, (feats.shape[2], feats.shape[3]), n_labels=n_labels,
                               mode="nearest" if stt else "bilinear")  # (K, h, w)
    soft = propagate_labels(feats, first, cfg)  # (T, K, h, w)
    size = (first_ids.shape[0], first_ids.shape[1])
    return [first_ids, *(labels_to_index(soft[t], size, minmax=stt) for t in range(1, len(soft)))]


def _write_masks(out_dir: Path | None, name: str, annotations: tuple[Path, ...],
                 preds: list[np.ndarray]) -> None:
    """Palette PNGs ``<out_dir>/<seq>/<frame>.png`` named like the GT masks."""
    if out_dir is None:
        return
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for ann, pred in zip(annotations, preds, strict=True):
        write_palette_png(folder / ann.name, pred)


def _pictures(result: SequenceResult, drawn: list[np.ndarray], enabled: bool, model: str) -> None:
    if enabled:
        result.strip = vis.strip_png(drawn, label=model)
        result.animation = vis.animated_gif(drawn)


def evaluate_davis(seq: MaskSequence, extractor: FeatureExtractor, cfg: EvaluateConfig,
                   out_dir: Path | None, *, visualize: bool = True) -> SequenceResult:
    """One DAVIS-2017 sequence at native resolution; writes palette PNGs to ``out_dir/<seq>``."""
    frames = load_frames(seq.frames)
    gt = np.stack([read_annotation(a) for a in seq.annotations])  # (T, H, W)
    first = np.where(gt[0] == VOID, 0, gt[0])
    n_objects = int(first.max())
    preds = propagate_mask(extractor, frames, first, cfg, n_objects + 1)
    _write_masks(out_dir, seq.name, seq.annotations, preds)
    records = davis_sequence_scores(gt, np.stack(preds), n_objects)
    result = SequenceResult("davis", seq.name, len(frames), records=records,
                            rows=[{"Sequence": f"{seq.name}_{k}", **r}
                                  for k, r in enumerate(records, start=1)])
    _pictures(result, [vis.overlay_ids(f, p) for f, p in zip(frames, preds, strict=True)],
              visualize, extractor.spec.name)
    return result


def evaluate_vip(seq: MaskSequence, extractor: FeatureExtractor, cfg: EvaluateConfig,
                 out_dir: Path | None, *, size: tuple[int, int] | None = SQUASH["vip"],
                 visualize: bool = True) -> SequenceResult:
    """One VIP sequence: frames squashed to ``size``, part ids decoded at the GT size."""
    frames = load_frames(seq.frames)
    gt = np.stack([read_annotation(a) for a in seq.annotations])  # (T, H, W)
    first = np.where(gt[0] < VIP_CLASSES, gt[0], 0)  # void/unknown ids propagate as background
    # Departure from CRW (560 px argmax, then nearest to the GT size): soft labels are
    # upsampled straight to the GT size, one interpolation instead of two.
    preds = propagate_mask(extractor, squash(frames, size), first, cfg, VIP_CLASSES)
    _write_masks(out_dir, seq.name, seq.annotations, preds)
    confusion = ConfusionMatrix(VIP_CLASSES)
    for g, p in zip(gt, preds, strict=True):
        confusion.update(g, p)  # frame 0 included, as both papers count it
    result = SequenceResult("vip", seq.name, len(frames), confusion=confusion.matrix,
                            rows=[{"Sequence": seq.name, "mIoU": confusion.miou()}])
    _pictures(result, [vis.overlay_ids(f, p) for f, p in zip(frames, preds, strict=True)],
              visualize, extractor.spec.name)
    return result


def evaluate_jhmdb(seq: PoseSequence, extractor: FeatureExtractor, cfg: EvaluateConfig,
                   out_dir: Path | None, *, size: tuple[int, int] | None = SQUASH["jhmdb"],
                   visualize: bool = True) -> SequenceResult:
    """One JHMDB sequence: heat-maps propagated at feature resolution, joints in pixels."""
    frames = load_frames(seq.frames)
    if extractor.spec.kind == "copy":
        return _jhmdb_result(seq, frames, np.repeat(seq.joints[:1], len(frames), axis=0), out_dir,
                             visualize, extractor.spec.name)
    height, width = frames.shape[1:3]
    feats = extractor(squash(frames, size))  # (T, C, h, w)
    h, w = feats.shape[2:]
    cells = np.array([w / width, h / height])  # original pixels -> feature cells
    first = joints_to_heatmaps(seq.joints[0] * cells, (h, w), background=True)  # (16, h, w)
    soft = propagate_labels(feats, first, cfg)
    pred = np.stack([seq.joints[0], *(_to_pixels(decode_keypoints(soft[t, 1:], topk=JHMDB_TOPK),
                                                 cells) for t in range(1, len(soft)))])
    return _jhmdb_result(seq, frames, pred, out_dir, visualize, extractor.spec.name)


def _jhmdb_result(seq: PoseSequence, frames: np.ndarray, pred: np.ndarray, out_dir: Path | None,
                  visualize: bool, model: str) -> SequenceResult:
    """Save ``pred`` ``(T, 15, 2)`` (pixels), score it, draw it."""
    if out_dir is not None:
        (out_dir / seq.name).mkdir(parents=True, exist_ok=True)
        np.save(out_dir / seq.name / "keypoints.npy", pred)  # (T, 15, 2) pixels
    scores = pck([pred], [seq.joints])
    result = SequenceResult("jhmdb", seq.name, len(frames), keypoints=(pred, seq.joints),
                            rows=[{"Sequence": seq.name, **scores}])
    _pictures(result, [vis.draw_skeleton(f, j) for f, j in zip(frames, pred, strict=True)],
              visualize, model)
    return result


def _to_pixels(coords: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Feature-cell (x, y) -> original pixels, keeping -1 (invisible) as -1."""
    return np.where(coords[:, :1] < 0, -1.0, coords / cells)


def evaluate_sequence(benchmark: str, seq: MaskSequence | PoseSequence,
                      extractor: FeatureExtractor, cfg: EvaluateConfig, out_dir: Path | None, *,
                      size: tuple[int, int] | None = None, visualize: bool = True,
                      ) -> SequenceResult:
    """Evaluate one sequence of ``benchmark`` ("davis", "vip" or "jhmdb"), timed.

    Args:
        benchmark: which protocol.
        seq: the sequence from the benchmark's reader.
        extractor: features of the model under evaluation.
        cfg: the ``evaluate`` config section (propagation parameters).
        out_dir: where predictions go (``<out_dir>/<seq>/...``); None = nowhere.
        size: squash size for VIP/JHMDB; None = ``cfg.vip_size`` / ``cfg.jhmdb_size`` (the
            protocol's 560 / 320 by default; null there = native size).
        visualize: render the strip and the GIF.

    Raises:
        ValueError: unknown benchmark, or a sequence of the wrong kind.
    """
    start = time.perf_counter()
    if benchmark == "davis" and isinstance(seq, MaskSequence):
        result = evaluate_davis(seq, extractor, cfg, out_dir, visualize=visualize)
    elif benchmark == "vip" and isinstance(seq, MaskSequence):
        result = evaluate_vip(seq, extractor, cfg, out_dir, size=size or cfg.vip_size,
                              visualize=visualize)
    elif benchmark == "jhmdb" and isinstance(seq, PoseSequence):
        result = evaluate_jhmdb(seq, extractor, cfg, out_dir, size=size or cfg.jhmdb_size,
                                visualize=visualize)
    else:
        raise ValueError(f"benchmark {benchmark!r}: expected davis, vip or jhmdb with its "
                         f"reader's sequence, got {type(seq).__name__}")
    result.seconds = time.perf_counter() - start
    return result
