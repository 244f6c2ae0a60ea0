"""Phase timing for benchmarks/evaluation.py: the harness's functions wrapped from outside.

Nothing in the library is edited: module attributes of stcorr.eval (the functions the harness
looks up per call) are replaced by timed wrappers, nested calls counted once, and the seconds
sorted into phases on two clocks (wall and CPU). docs/benchmarks.md and the evaluation
benchmark's docstring say which function lands in which phase.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PHASES = ("reading", "features", "propagation", "decoding", "writing", "scoring")

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


class Phases:
    """Seconds per phase on both clocks, from wrappers around the functions the harness calls."""

    def __init__(self) -> None:
        self.seconds = {c: dict.fromkeys(PHASES, 0.0) for c in CLOCKS}
        self.untimed = dict.fromkeys(CLOCKS, 0.0)  # the benchmark's own work (saving features)
        self.save_to: Path | None = None  # save the next features here, then forget it
        self._depth = 0

    def reset(self) -> None:
        self.seconds = {c: dict.fromkeys(PHASES, 0.0) for c in CLOCKS}
        self.untimed = dict.fromkeys(CLOCKS, 0.0)

    def now(self) -> dict[str, float]:
        return {c: clock() for c, clock in CLOCKS.items()}

    def wrap(self, fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:  # nested in another timed call: counted there
                return fn(*args, **kwargs)
            self._depth += 1
            start = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                for c, end in self.now().items():
                    self.seconds[c][phase] += end - start[c]
                self._depth -= 1
        return timed


def instrument(phases: Phases) -> None:
    """Replace the harness's functions by timed wrappers (module attributes, looked up per call).

    While ``phases.save_to`` is set, the next features computed are written there (outside the
    timed phases; ``phases.untimed`` takes the time) and it is cleared.
    """
    import torch

    from stcorr.eval import features, harness, sequence, visualize

    targets = {sequence: {"load_frames": "reading", "read_annotation": "reading",
                          "first_frame_labels": "propagation", "propagate_labels": "propagation",
                          "labels_to_index": "decoding", "_write_masks": "writing",
                          "davis_sequence_scores": "scoring"},
               visualize: {"overlay_ids": "writing", "strip_png": "writing",
                           "animated_gif": "writing"},
               harness: {"write_outputs": "writing", "aggregate": "scoring"}}
    for module, names in targets.items():
        for name, phase in names.items():
            setattr(module, name, phases.wrap(getattr(module, name), phase))
    call = phases.wrap(features.FeatureExtractor.__call__, "features")

    def extract(self: Any, frames: Any, *args: Any, **kwargs: Any) -> Any:
        out = call(self, frames, *args, **kwargs)
        if phases.save_to is not None:
            start = phases.now()
            torch.save(out, phases.save_to)
            phases.save_to = None
            for c, end in phases.now().items():
                phases.untimed[c] += end - start[c]
        return out

    features.FeatureExtractor.__call__ = extract
