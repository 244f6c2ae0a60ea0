"""One checkpoint contract: save named state, restore it by name (DINO's restart_from_checkpoint).

A checkpoint is a folder holding ``state.pt`` with ``model``, ``optimizer``, ``scheduler``,
``step``, ``rng`` and ``config`` (plus anything stage-specific, e.g. the MoCo queue lives in the
model's buffers). It is written to a temporary name and renamed, so a crash or a full disk never
leaves a half-written checkpoint that a later run would trust.
"""

from __future__ import annotations

import copy
import os
import random
import uuid
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

STATE_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or does not fit the model; one line, names the folder."""


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def capture_rng() -> dict[str, Any]:
    """The state of every random generator a training step touches."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture_state(*, step: int, config: dict[str, Any], **objects: Stateful) -> dict[str, Any]:
    """A copy of every named object's state (tensors cloned), the step, config and RNG states.

    The copy is what lets training go on while the checkpoint is written in the background:
    later optimiser steps cannot change it.
    """
    state: dict[str, Any] = {name: copy.deepcopy(obj.state_dict()) for name, obj in objects.items()}
    state.update(step=step, config=config, rng=capture_rng())
    return state


def write_state(directory: Path, state: dict[str, Any]) -> Path:
    """Write a :func:`capture_state` result as ``directory/state.pt`` atomically; return its path.

    Raises:
        CheckpointError: the folder cannot be written (e.g. the disk is full); the partial file
            is removed and any previous checkpoint is untouched.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, final)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
        raise CheckpointError(
            f"{directory}: cannot write checkpoint at step {state['step']} ({reason}); "
            "the previous checkpoint is kept"
        ) from None
    return final


def save_checkpoint(directory: Path, *, step: int, config: dict[str, Any], **objects: Stateful) -> Path:
    """Write ``state.pt`` atomically into ``directory``; return its path.

    Args:
        directory: checkpoint folder (created).
        step: the number of optimiser steps done.
        config: the stage config, stored so a restore can check it fits.
        **objects: named stateful objects (``model=..., optimizer=..., scheduler=...``).

    Raises:
        CheckpointError: as :func:`write_state`.
    """
    return write_state(directory, capture_state(step=step, config=config, **objects))


def restore_checkpoint(directory: Path, **objects: Stateful) -> dict[str, Any]:
    """Load ``state.pt`` from ``directory`` into the named objects and the random generators.

    Returns:
        The remaining entries (``step``, ``config``, and anything not restored by name).

    Raises:
        CheckpointError: the file is missing or holds no state for one of ``objects``.
    """
    path = directory / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    for name, obj in objects.items():
        if name not in state:
            raise CheckpointError(f"{path}: holds no '{name}' state; found {sorted(state)}")
        obj.load_state_dict(state.pop(name))
    restore_rng(state.pop("rng"))
    return state
