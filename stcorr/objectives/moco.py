"""MoCo v2 spatial contrastive pre-training, STT Eq. 1 (Li & Liu, CVPR 2023, arXiv 2209.07778).

STT's step 1 is InfoNCE on still images (the paper defers to MoCo, He et al., CVPR 2020; v2:
Chen et al., arXiv 2003.04297): a query encoder, a momentum key encoder, a queue of K negative
keys, and L = -log exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_K exp(q.k_i / tau)).
Follows moco's `builder.py`: backbone res5 -> global average pool -> 2-layer MLP head
("hidden layer 2048-d, with ReLU", MoCo v2) -> L2-normalise; keys gathered from all ranks before
they are enqueued; shuffle-BN for the key encoder across ranks.
Departures (docs/methods.md 2.1): K need not be a multiple of the global batch (the queue write
wraps around, moco asserts divisibility); the key encoder is updated and the queue written only in
training mode, so a validation forward leaves the state untouched. Diagnostic (not in moco): the
queue also keeps the image id of each key, so a step can report how many queries find a key of their
own image among the negatives, which happens once K reaches the number of distinct images.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stcorr.config import MocoConfig
from stcorr.models.resnet import build_backbone, encoder_state_dict


def info_nce(q: Tensor, k: Tensor, queue: Tensor, tau: float) -> tuple[Tensor, Tensor, Tensor]:
    """InfoNCE of STT Eq. 1: the positive key is class 0 among 1 + K.

    Args:
        q: (N, C) L2-normalised queries.
        k: (N, C) L2-normalised positive keys (no gradient expected).
        queue: (C, K) L2-normalised negative keys.
        tau: temperature.

    Returns:
        (loss scalar, logits (N, 1+K), labels (N,) of zeros).
    """
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (N, 1)
    l_neg = torch.einsum("nc,ck->nk", q, queue.clone().detach())  # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / tau  # (N, 1+K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels), logits, labels


class MoCo(nn.Module):
    """MoCo v2 with a torchvision-named backbone; `forward` returns the loss (STT Eq. 1).

    Args:
        backbone: module returning {"res5": (B, C, h, w)} with `out_channels["res5"]`; the
            query encoder. The key encoder is a deep copy.
        dim: embedding size (128).
        hidden: hidden width of the MLP head (2048).
        queue: K, negatives in the queue.
        momentum: m of the key-encoder update k = m k + (1 - m) q.
        tau: InfoNCE temperature.
        shuffle_bn: shuffle the key batch across ranks before the key encoder (DDP only; in a
            single process BN statistics over the whole batch are permutation invariant).
    """

    queue: Tensor
    queue_ptr: Tensor
    queue_ids: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        dim: int = 128,
        hidden: int = 2048,
        queue: int = 4096,
        momentum: float = 0.999,
        tau: float = 0.2,
        shuffle_bn: bool = True,
    ) -> None:
        super().__init__()
        self.K, self.m, self.tau, self.shuffle_bn = queue, momentum, tau, shuffle_bn
        channels = int(backbone.out_channels["res5"])  # type: ignore[index]
        self.encoder_q = backbone
        self.head_q = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
        self.encoder_k = copy.deepcopy(backbone)
        self.head_k = copy.deepcopy(self.head_q)
        for p in self._key_params():
            p.requires_grad = False  # updated by momentum only, never by gradients
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))  # (C, K)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_ids", torch.full((queue,), -1, dtype=torch.long))  # -1: random init

    @classmethod
    def from_config(cls, cfg: MocoConfig, arch: str = "resnet18") -> MoCo:
        """Build on the `stt_teacher` backbone (the stage-1 encoder becomes STT's teacher)."""
        backbone = build_backbone("stt_teacher", arch, out=("res5",))
        return cls(backbone, cfg.dim, cfg.hidden, cfg.queue, cfg.momentum, cfg.tau, cfg.shuffle_bn)

    def forward(self, im_q: Tensor, im_k: Tensor, ids: Tensor | None = None) -> dict[str, Tensor]:
        """One InfoNCE step on two augmented views.

        Args:
            im_q: (N, 3, H, W) query views.
            im_k: (N, 3, H, W) key views of the same images.
            ids: (N,) non-negative image ids (diagnostics only; -1 marks an unknown image).

        Returns:
            "loss" (scalar), "acc1" (top-1 % of the positive), "acc1_chance" (100 / (1 + K)),
            "positive_in_queue" (share of queries whose own image has a key in the queue,
            with ``ids``), "logits" (N, 1+K), "labels" (N,), "keys" (N, C) this rank's keys.
        """
        q = self._embed(self.encoder_q, self.head_q, im_q)  # (N, C)
        with torch.no_grad():
            if self.training:
                self._momentum_update_key_encoder()
            k = self._keys(im_k)  # (N, C)
        loss, logits, labels = info_nce(q, k, self.queue, self.tau)
        acc1 = (logits.argmax(dim=1) == labels).float().mean() * 100.0
        out = {"loss": loss, "acc1": acc1.detach(), "acc1_chance": q.new_tensor(100.0 / (1 + self.K)),
               "logits": logits, "labels": labels, "keys": k}
        if ids is not None:  # a false negative: the queue holds a key of the query's own image
            ids = ids.to(self.queue_ids.device)
            out["positive_in_queue"] = (ids[:, None] == self.queue_ids[None, :]).any(1).float().mean()
        if self.training:
            self._dequeue_and_enqueue(k, ids)
        return out

    def query_encoder_state(self) -> dict[str, Tensor]:
        """The query backbone's weights in torchvision key names (the pretrain output)."""
        return encoder_state_dict(self.encoder_q)

    @staticmethod
    def _embed(encoder: nn.Module, head: nn.Module, x: Tensor) -> Tensor:
        feats = encoder(x)["res5"].mean(dim=(2, 3))  # global average pool: (N, C_res5)
        return F.normalize(head(feats), dim=1)

    def _keys(self, im_k: Tensor) -> Tensor:
        """Key embeddings, with shuffle-BN across ranks when distributed."""
        if self.shuffle_bn and _world_size() > 1:
            im_k, idx_unshuffle = batch_shuffle_ddp(im_k)
            k = self._embed(self.encoder_k, self.head_k, im_k)
            return batch_unshuffle_ddp(k, idx_unshuffle)
        return self._embed(self.encoder_k, self.head_k, im_k)

    def _key_params(self) -> list[nn.Parameter]:
        return [*self.encoder_k.parameters(), *self.head_k.parameters()]

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        query = [*self.encoder_q.parameters(), *self.head_q.parameters()]
        for p_k, p_q in zip(self._key_params(), query, strict=True):
            p_k.mul_(self.m).add_(p_q.detach(), alpha=1.0 - self.m)  # k = m k + (1 - m) q

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: Tensor, ids: Tensor | None = None) -> None:
        """Write the keys (and image ids) of all ranks at the pointer, wrapping around the end."""
        keys = concat_all_gather(keys)[-self.K :]  # (N * world, C); keeps the newest K keys
        n, ptr = keys.shape[0], int(self.queue_ptr)
        idx = (ptr + torch.arange(n, device=keys.device)) % self.K  # wrap, moco asserts K % n == 0
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        if ids is not None:
            self.queue_ids[idx] = concat_all_gather(ids.to(keys.device))[-self.K :]
        self.queue_ptr[0] = (ptr + n) % self.K


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """All-gather `x` (N, ...) from every rank into (N * world, ...); identity in one process.

    Every rank must pass the same N (as in moco); no gradient flows through the gather.
    """
    world = _world_size()
    if world == 1:
        return x
    gathered = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(gathered, x.contiguous())
    return torch.cat(gathered, dim=0)


@torch.no_grad()
def batch_shuffle_ddp(x: Tensor) -> tuple[Tensor, Tensor]:
    """Shuffle the global batch across ranks (moco `_batch_shuffle_ddp`), for shuffle-BN.

    Args:
        x: (N, ...) this rank's batch.

    Returns:
        (this rank's (N, ...) slice of the shuffled global batch, idx_unshuffle (N * world,)).
    """
    dist: Any = torch.distributed
    x_all = concat_all_gather(x)  # (N * world, ...)
    idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(idx_shuffle, src=0)  # every rank uses rank 0's permutation
    idx_unshuffle = torch.argsort(idx_shuffle)
    idx_this = idx_shuffle.view(_world_size(), -1)[dist.get_rank()]
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undo `batch_shuffle_ddp`: return this rank's rows in their original order."""
    x_all = concat_all_gather(x)
    idx_this = idx_unshuffle.view(_world_size(), -1)[torch.distributed.get_rank()]
    return x_all[idx_this]
