"""Teacher stage: freeze the spatial encoder (step 2 of STT uses it as the frozen teacher).

The teacher is the pretrain encoder in eval mode with ``requires_grad=False``; its sha256 over the
state dict is recorded so fine-tuning can prove at the end that nothing changed it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from stcorr.models.contract import override_contract, pack, unpack
from stcorr.models.resnet import build_backbone, encoder_state_dict, load_weights_file


def state_sha256(state: Mapping[str, Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted key order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(
            tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes()
        )
    return digest.hexdigest()


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for good: BN statistics and weights stay as loaded."""
    module.eval()
    for param in module.parameters():
        param.requires_grad = False
    return module


def build_teacher(weights: Path, arch: str) -> nn.Module:
    """The ``stt_teacher`` backbone loaded from ``weights`` and frozen."""
    teacher = build_backbone("stt_teacher", arch)
    load_weights_file(teacher, weights)
    return freeze(teacher)


def make_teacher(pretrain_encoder: Path, out_file: Path, arch: str) -> str:
    """Load, freeze and save the teacher with the spatial encoder's contract; return its sha256
    (over the weights only)."""
    teacher = build_teacher(pretrain_encoder, arch)
    state = encoder_state_dict(teacher)
    loaded = torch.load(pretrain_encoder, map_location="cpu", weights_only=True)
    contract = unpack(loaded, str(pretrain_encoder))[1] or override_contract("moco", arch=arch)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pack(state, contract), out_file)
    return state_sha256(state)
