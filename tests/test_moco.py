"""MoCo v2 (STT Eq. 1; Li & Liu, CVPR 2023): InfoNCE, queue, momentum, gradients, DDP gather."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from stcorr.config import MocoConfig
from stcorr.models.resnet import build_backbone
from stcorr.objectives.moco import MoCo, batch_shuffle_ddp, batch_unshuffle_ddp, info_nce


class _TinyBackbone(nn.Module):
    """conv-BN-ReLU stand-in for the ResNet (BN makes shuffle-BN matter; no torchvision import)."""

    out_channels = {"res5": 8}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"res5": self.body(x)}


def _tiny_moco(queue: int = 8, momentum: float = 0.9, resnet: bool = False) -> MoCo:
    backbone = build_backbone("stt_teacher", "resnet18", out=("res5",)) if resnet else _TinyBackbone()
    return MoCo(backbone, dim=4, hidden=16, queue=queue, momentum=momentum, tau=0.2)


def test_info_nce_matches_hand_computed_value() -> None:
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    k = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    queue = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, 0.0]])  # (C=2, K=3) columns are keys
    loss, logits, labels = info_nce(q, k, queue, tau=0.5)
    # row 0: dots (pos 0.8 | neg 0, -1, 1); row 1: (pos 1.0 | neg 0.8, -0.6, 0.6)
    rows = [[0.8, 0.0, -1.0, 1.0], [1.0, 0.8, -0.6, 0.6]]
    by_hand = [-math.log(math.exp(r[0] / 0.5) / sum(math.exp(v / 0.5) for v in r)) for r in rows]
    assert abs(loss.item() - sum(by_hand) / 2) < 1e-6
    assert torch.allclose(logits, torch.tensor(rows) / 0.5)
    assert labels.tolist() == [0, 0]


def test_queue_enqueue_moves_pointer_and_wraps() -> None:
    model = _tiny_moco(queue=5)
    batches = [torch.full((2, 4), float(i + 1)) for i in range(3)]
    for batch in batches:
        model._dequeue_and_enqueue(batch)
    assert int(model.queue_ptr) == 1  # 0 -> 2 -> 4 -> 6 % 5
    # columns 0..4 hold batch 3 (wrapped to 4, 0), batch 1 (1), batch 2 (2, 3)
    assert model.queue[0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]
    assert "queue" in model.state_dict() and "queue_ptr" in model.state_dict()


def test_momentum_update_formula() -> None:
    model = _tiny_moco(momentum=0.9)
    with torch.no_grad():
        for p in [*model.encoder_k.parameters(), *model.head_k.parameters()]:
            p.copy_(torch.randn_like(p))
    before_k = [p.clone() for p in [*model.encoder_k.parameters(), *model.head_k.parameters()]]
    query = [p.clone() for p in [*model.encoder_q.parameters(), *model.head_q.parameters()]]
    model._momentum_update_key_encoder()
    after_k = [*model.encoder_k.parameters(), *model.head_k.parameters()]
    for k0, q, k1 in zip(before_k, query, after_k, strict=True):
        torch.testing.assert_close(k1, 0.9 * k0 + 0.1 * q)


def test_gradients_reach_query_encoder_never_key_encoder() -> None:
    torch.manual_seed(0)
    model = _tiny_moco(resnet=True).train()
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    assert out["logits"].shape == (4, 1 + 8) and 0.0 <= out["acc1"].item() <= 100.0
    out["loss"].backward()
    query = [*model.encoder_q.parameters(), *model.head_q.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in query)
    keys = [*model.encoder_k.parameters(), *model.head_k.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in keys)
    # the queue now starts with this step's keys, and the pointer moved by the batch
    torch.testing.assert_close(model.queue[:, :4], out["keys"].T)
    assert int(model.queue_ptr) == 4
    names = set(model.query_encoder_state())
    assert "layer4.1.bn2.running_mean" in names and not any("head" in n for n in names)


def test_from_config_and_eval_forward_leaves_state() -> None:
    model = MoCo.from_config(MocoConfig(dim=8, hidden=32, queue=6), "resnet18").eval()
    queue = model.queue.clone()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 7)
    assert torch.equal(model.queue, queue) and int(model.queue_ptr) == 0
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(6))
    expected = F.cross_entropy(out["logits"], out["labels"])
    torch.testing.assert_close(out["loss"], expected)


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same init on both ranks, as DDP would broadcast it
        model = _tiny_moco(queue=8).train()
        torch.manual_seed(100 + rank)  # different images per rank
        out = model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
        x = torch.arange(6.0).view(3, 2) + 10 * rank
        shuffled, idx_unshuffle = batch_shuffle_ddp(x)
        restored = batch_unshuffle_ddp(shuffled, idx_unshuffle)
        torch.save(
            {
                "queue": model.queue,
                "ptr": model.queue_ptr,
                "keys": out["keys"],
                "x": x,
                "shuffled": shuffled,
                "restored": restored,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_ddp_queue_holds_keys_of_both_ranks(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["queue"], r1["queue"])
    torch.testing.assert_close(r0["queue"][:, :4], torch.cat([r0["keys"], r1["keys"]]).T)
    assert int(r0["ptr"]) == int(r1["ptr"]) == 4
    # shuffle-BN helpers: a permutation of the global batch that unshuffles to the original
    assert torch.equal(r0["restored"], r0["x"]) and torch.equal(r1["restored"], r1["x"])
    both = torch.cat([r0["shuffled"], r1["shuffled"]])
    original = torch.cat([r0["x"], r1["x"]])
    assert sorted(both[:, 0].tolist()) == sorted(original[:, 0].tolist())
