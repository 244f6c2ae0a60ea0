"""Readers for the three propagation benchmarks in their published folder layouts.

DAVIS-2017 (``davis2017/davis.py:31-54``), VIP (``VIP_Fine``, xvjiarui/VFS#4) and JHMDB (UVC's
``testlist_split1.txt``, ``joint_positions.mat``), docs/methods.md 3.2-3.4 and 4.1. A reader only
lists files and checks the layout, the mask sizes and the first-frame mask; pixels are
loaded later, one frame at a time. A wrong layout gives one line naming the missing part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stcorr.eval.labels import read_annotation

DAVIS_LAYOUT = "the DAVIS-2017 layout (JPEGImages/480p, Annotations/480p, ImageSets/2017/val.txt)"
VIP_LAYOUT = ("the VIP layout (VIP_Fine/Images, VIP_Fine/Annotations/Category_ids, "
              "VIP_Fine/lists/val_videos.txt)")
JHMDB_LAYOUT = ("the JHMDB layout (Frames/<action>/<seq>/%05d.png, "
                "joint_positions/<action>/<seq>/joint_positions.mat, testlist_split1.txt)")
VOID = 255  # DAVIS void label: background for the metric (davis.py:88-90)


class BenchmarkLayoutError(FileNotFoundError):
    """A benchmark folder that is not in the expected layout; the message is one line."""


@dataclass(frozen=True)
class MaskSequence:
    """One DAVIS or VIP video: frames and one annotation per frame (same stems, in order)."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]


@dataclass(frozen=True)
class PoseSequence:
    """One JHMDB video: frames and GT joints ``(T, 15, 2)`` as 0-based (x, y) pixels."""

    name: str  # "<action>/<seq>"
    frames: tuple[Path, ...]
    joints: np.ndarray


def _require(path: Path, root: Path, bench: str, layout: str) -> Path:
    """Return ``path`` if it exists, else raise the one-line layout error."""
    if not path.exists():
        raise BenchmarkLayoutError(
            f"{bench}: {path.relative_to(root)} not found under {root}; expected {layout}")
    return path


def _read_list(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a split file, stripped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _mask_sequence(name: str, frame_dir: Path, mask_dir: Path, frame_ext: str, root: Path,
                   bench: str, layout: str) -> MaskSequence:
    """Pair frames with same-stem masks; check sizes and that frame 0 has an object."""
    frames = tuple(sorted(_require(frame_dir, root, bench, layout).glob(f"*{frame_ext}")))
    if not frames:
        raise BenchmarkLayoutError(
            f"{bench}: no {frame_ext} frames in {frame_dir.relative_to(root)} under {root}; "
            f"expected {layout}")
    _require(mask_dir, root, bench, layout)
    masks = tuple(_require(mask_dir / f"{f.stem}.png", root, bench, layout) for f in frames)
    for frame, mask in zip(frames, masks, strict=True):
        with Image.open(frame) as fi, Image.open(mask) as mi:
            if fi.size != mi.size:
                raise ValueError(f"{mask}: mask is {mi.size[0]}x{mi.size[1]} but frame {frame} "
                                 f"is {fi.size[0]}x{fi.size[1]}; expected the same size")
    first = read_annotation(masks[0])
    if not ((first > 0) & (first != VOID)).any():
        raise ValueError(f"{masks[0]}: first-frame mask has no object; expected at least one "
                         f"non-zero id to propagate")
    return MaskSequence(name, frames, masks)


def read_davis(root: str | Path, *, split: str = "val", sequences: Sequence[str] | None = None,
               resolution: str = "480p") -> list[MaskSequence]:
    """DAVIS-2017: ``JPEGImages/480p/<seq>/%05d.jpg``, ``Annotations/480p/<seq>/%05d.png``.

    Args:
        root: the DAVIS folder.
        split: name of the list in ``ImageSets/2017`` used when ``sequences`` is None.
        sequences: sequence names to read instead of the split list.
        resolution: the resolution folder (``480p``).

    Raises:
        BenchmarkLayoutError: a missing folder, list or mask (one line naming it).
        ValueError: a mask whose size differs from its frame, or an empty first-frame mask.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkLayoutError(f"davis: {root} not found; expected {DAVIS_LAYOUT}")
    if sequences is None:
        sequences = _read_list(_require(root / "ImageSets" / "2017" / f"{split}.txt", root,
                                        "davis", DAVIS_LAYOUT))
    return [_mask_sequence(name, root / "JPEGImages" / resolution / name,
                           root / "Annotations" / resolution / name, ".jpg", root, "davis",
                           DAVIS_LAYOUT) for name in sequences]


def read_vip(root: str | Path, *, split: str = "val",
             sequences: Sequence[str] | None = None) -> list[MaskSequence]:
    """VIP: ``VIP_Fine/Images/<seq>/*.jpg``, ``VIP_Fine/Annotations/Category_ids/<seq>/*.png``.

    Annotations are grey class ids 0..19. ``root`` may be the folder holding ``VIP_Fine`` or
    ``VIP_Fine`` itself; the list is ``VIP_Fine/lists/<split>_videos.txt``.

    Raises:
        BenchmarkLayoutError: a missing folder, list or mask (one line naming it).
        ValueError: a mask whose size differs from its frame, or an empty first-frame mask.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkLayoutError(f"vip: {root} not found; expected {VIP_LAYOUT}")
    if (root / "VIP_Fine").is_dir():
        base = root / "VIP_Fine"
    elif root.name == "VIP_Fine" or (root / "Images").is_dir():
        base = root  # root is VIP_Fine itself
    else:
        raise BenchmarkLayoutError(f"vip: VIP_Fine not found under {root}; expected {VIP_LAYOUT}")
    if sequences is None:
        sequences = _read_list(_require(base / "lists" / f"{split}_videos.txt", root, "vip",
                                        VIP_LAYOUT))
    return [_mask_sequence(name, base / "Images" / name,
                           base / "Annotations" / "Category_ids" / name, ".jpg", root, "vip",
                           VIP_LAYOUT) for name in sequences]


def _jhmdb_name(line: str) -> str:
    """``<action>/<seq>`` from a split line: first column, any ``.avi`` suffix or prefix path."""
    first = line.split()[0].rstrip("/")
    if first.endswith(".avi"):
        first = first[: -len(".avi")]
    parts = first.split("/")
    return "/".join(parts[-2:])


def read_jhmdb(root: str | Path, *, split_file: str | Path | None = None,
               sequences: Sequence[str] | None = None) -> list[PoseSequence]:
    """JHMDB: ``Frames/<action>/<seq>/%05d.png`` and ``joint_positions.mat`` (``pos_img``).

    ``pos_img`` is ``2 x 15 x T`` in 1-based pixels; it is returned as ``(T, 15, 2)`` 0-based.
    Split lines are ``<action>/<seq>``; extra columns, leading paths and ``.avi`` are ignored.

    Args:
        root: the JHMDB folder.
        split_file: list of test videos; None = ``root/testlist_split1.txt``.
        sequences: ``<action>/<seq>`` names to read instead of the split list.

    Raises:
        BenchmarkLayoutError: a missing folder, list or ``.mat`` file (one line naming it).
        ValueError: an unreadable ``.mat``, no ``pos_img``, or a joint/frame count mismatch.
    """
    from scipy.io import loadmat  # scipy.io is slow to import; only JHMDB needs it

    root = Path(root)
    if not root.is_dir():
        raise BenchmarkLayoutError(f"jhmdb: {root} not found; expected {JHMDB_LAYOUT}")
    if sequences is None:
        split = Path(split_file) if split_file else root / "testlist_split1.txt"
        if not split.exists():
            raise BenchmarkLayoutError(f"jhmdb: split file {split} not found; expected "
                                       f"{JHMDB_LAYOUT}")
        sequences = [_jhmdb_name(line) for line in _read_list(split)]
    out = []
    for name in sequences:
        frame_dir = _require(root / "Frames" / name, root, "jhmdb", JHMDB_LAYOUT)
        frames = tuple(sorted(frame_dir.glob("*.png"), key=lambda p: (len(p.stem), p.stem)))
        if not frames:
            raise BenchmarkLayoutError(f"jhmdb: no .png frames in Frames/{name} under {root}; "
                                       f"expected {JHMDB_LAYOUT}")
        mat = _require(root / "joint_positions" / name / "joint_positions.mat", root, "jhmdb",
                       JHMDB_LAYOUT)
        try:
            pos = np.asarray(loadmat(str(mat))["pos_img"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(
                f"{mat}: cannot read pos_img ({exc!r}); expected a 2x15xT array") from exc
        if pos.ndim != 3 or pos.shape[0] != 2 or pos.shape[2] != len(frames):
            raise ValueError(f"{mat}: pos_img is {'x'.join(map(str, pos.shape))} for "
                             f"{len(frames)} frames; expected 2x15x{len(frames)}")
        out.append(PoseSequence(name, frames, (pos - 1).transpose(2, 1, 0)))
    return out
