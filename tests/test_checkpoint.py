"""Checkpoint contract, schedule and teacher hashing: the pieces every training stage relies on."""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from stcorr.train.checkpoint import (
    STATE_FILE,
    CheckpointError,
    capture_state,
    restore_checkpoint,
    save_checkpoint,
    write_state,
)
from stcorr.train.schedule import cosine_with_warmup
from stcorr.train.teacher import freeze, state_sha256
from stcorr.train.worker import checkpoint_folder


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def _train_a_bit(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: object, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(16, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()  # type: ignore[attr-defined]


def test_captured_state_is_written_as_it_was_when_captured(tmp_path: Path) -> None:
    """The background checkpoint writer gets a copy: steps taken after the capture (while the
    file is still being written) do not leak into it."""
    torch.manual_seed(0)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = cosine_with_warmup(optimizer, total_steps=20, warmup_steps=3)
    _train_a_bit(model, optimizer, scheduler, 3)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = optimizer.state_dict()["state"][0]["momentum_buffer"].clone()
    state = capture_state(step=3, config={}, model=model, optimizer=optimizer, scheduler=scheduler)
    _train_a_bit(model, optimizer, scheduler, 4)  # training goes on before the write
    write_state(tmp_path, state)

    other = _model()
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    other_sched = cosine_with_warmup(other_opt, total_steps=20, warmup_steps=3)
    rest = restore_checkpoint(tmp_path, model=other, optimizer=other_opt, scheduler=other_sched)
    assert rest["step"] == 3 and other_sched.last_epoch == 3
    for key, value in other.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"], momentum)
    assert not torch.equal(model.state_dict()["0.weight"], weights["0.weight"])  # it did move on


def test_round_trip_restores_model_optimizer_scheduler_rng(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = cosine_with_warmup(optimizer, total_steps=20, warmup_steps=3)
    _train_a_bit(model, optimizer, scheduler, 5)
    save_checkpoint(
        tmp_path, step=5, config={"lr": 1e-2}, model=model, optimizer=optimizer, scheduler=scheduler
    )
    expected_next = torch.rand(3)  # what the generator gives right after the save

    other = _model()
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-2)
    other_sched = cosine_with_warmup(other_opt, total_steps=20, warmup_steps=3)
    rest = restore_checkpoint(tmp_path, model=other, optimizer=other_opt, scheduler=other_sched)

    assert rest["step"] == 5 and rest["config"] == {"lr": 1e-2}
    assert torch.equal(torch.rand(3), expected_next)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other_sched.last_epoch == scheduler.last_epoch
    assert other_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    # Continuing both gives identical weights: the optimiser moments came back too.
    torch.manual_seed(1)
    _train_a_bit(model, optimizer, scheduler, 2)
    torch.manual_seed(1)
    _train_a_bit(other, other_opt, other_sched, 2)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_restore_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        restore_checkpoint(tmp_path, model=_model())
    save_checkpoint(tmp_path, step=1, config={}, model=_model())
    with pytest.raises(CheckpointError, match="holds no 'optimizer' state"):
        restore_checkpoint(tmp_path, model=_model(), optimizer=torch.optim.SGD(_model().parameters(), lr=0.1))


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    good = _model()
    save_checkpoint(tmp_path, step=10, config={}, model=good)
    before = (tmp_path / "state.pt").read_bytes()
    # A child process whose file-size limit is 4 KiB: writing the big checkpoint fails like a
    # full disk does (EFBIG instead of ENOSPC), without needing root or a tiny filesystem.
    script = textwrap.dedent(
        f"""
        import resource, signal, sys, torch
        from pathlib import Path
        from stcorr.train.checkpoint import CheckpointError, save_checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        big = torch.nn.Linear(512, 512)
        try:
            save_checkpoint(Path({str(tmp_path)!r}), step=11, config={{}}, model=big)
        except CheckpointError as exc:
            print(exc)
            sys.exit(3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "cannot write checkpoint at step 11" in proc.stdout
    assert (tmp_path / "state.pt").read_bytes() == before  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no partial file left behind
    assert restore_checkpoint(tmp_path, model=_model())["step"] == 10


def test_cosine_with_warmup_shape() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, total_steps=100, warmup_steps=10, floor=1e-3)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(1e-3 + (1 - 1e-3) * 0.5, abs=1e-9)  # cosine midpoint
    assert lrs[-1] < 0.002
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lrs[10:]))  # monotone decay


def test_teacher_hash_is_stable_sensitive_and_frozen() -> None:
    torch.manual_seed(0)
    model = freeze(_model())
    state = model.state_dict()
    assert state_sha256(state) == state_sha256({k: v.clone() for k, v in state.items()})
    changed = {k: v.clone() for k, v in state.items()}
    changed["0.weight"][0, 0] += 1e-6
    assert state_sha256(changed) != state_sha256(state)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


def _file_identity(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def test_ranks_restoring_one_s3_checkpoint_on_one_node_each_read_their_own_copy(
    s3: str, tmp_path: Path
) -> None:
    """After a failure every rank restores the same checkpoint from S3 at once, several of them
    on one node. Each gets a folder of its own: a rank that downloads later does not rewrite the
    state.pt another rank is reading (Ray's Checkpoint.as_directory shares one folder per node
    and does, ray-project/ray#48726). A local checkpoint is read in place and left alone."""
    import pyarrow.fs
    from ray.train import Checkpoint

    torch.manual_seed(0)
    model = _model()
    save_checkpoint(tmp_path / "local", step=7, config={}, model=model)
    fs = pyarrow.fs.S3FileSystem(endpoint_override=s3, scheme="http", region="us-east-1")
    pyarrow.fs.copy_files(str(tmp_path / "local"), "bucket/run/checkpoint_000001", destination_filesystem=fs)
    checkpoint = Checkpoint("bucket/run/checkpoint_000001", filesystem=fs)
    twin = pickle.loads(pickle.dumps(checkpoint))  # what another rank receives: the same checkpoint

    def restored(folder: Path) -> nn.Module:
        other = _model()
        assert restore_checkpoint(folder, model=other)["step"] == 7
        return other

    with checkpoint_folder(checkpoint) as first:
        before = _file_identity(first / STATE_FILE)
        with checkpoint_folder(twin) as second:
            assert second != first
            restored(second)
        assert _file_identity(first / STATE_FILE) == before  # not rewritten while in use
        for key, value in restored(first).state_dict().items():
            assert torch.equal(value, model.state_dict()[key]), key
    assert not first.exists() and not second.exists()

    local = Checkpoint.from_directory(str(tmp_path / "local"))
    with checkpoint_folder(local) as folder:
        assert folder == tmp_path / "local"
    assert (tmp_path / "local" / STATE_FILE).is_file()
