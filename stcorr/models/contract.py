"""A model's input contract: what an encoder expects, stored with its weights and in the registry.

An encoder trained on RGB and scored on Lab (or the reverse) loses points without any error:
the numbers are simply worse. So every exported ``.pt`` carries its contract next to the state
dict, ``{"state_dict": {...}, "stcorr_contract": {...}}`` (the nesting the STT reference loader
already accepts, docs/methods.md 2.1), every registered version carries it as tags, and
``evaluate``, ``track`` and the pipeline read it instead of asking the user.

Fields: ``objective`` (how it was trained: "moco" for the spatial stage and its frozen teacher,
"stt", "crw"), ``input`` ("rgb" or "lab"), ``normalization`` ("imagenet": mean/std of
torchvision; "lab": (50, 0, 0) / (50, 127, 127) as STT), ``arch``, ``preset`` (the backbone
preset it is evaluated in, :mod:`stcorr.models.resnet`), ``stride`` (of that preset's res4),
``train_preset`` (the preset it was trained in), ``protocol`` (the evaluation protocol of its
paper, ``crw`` or ``stt``, that ``evaluate.protocol: auto`` picks; ``custom``: none, the
``evaluate`` keys as set). Checkpoints imported from the papers' code
(:mod:`stcorr.models.importers`) are ``vfs``, ``sfc`` or ``supervised`` (a torchvision ImageNet
ResNet) as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

CONTRACT_KEY = "stcorr_contract"
STATE_KEY = "state_dict"
TAG_PREFIX = "stcorr.contract."
OBJECTIVES = ("moco", "stt", "crw", "vfs", "sfc", "supervised")
PROTOCOLS = ("crw", "stt", "custom")
INPUTS = ("rgb", "lab")
NORMALIZATION = {"rgb": "imagenet", "lab": "lab"}
# ``--objective`` override spellings: how a model without (or against) its contract is read.
OVERRIDES = ("stt", "stt-rgb", "crw", "moco")


class ContractError(ValueError):
    """A contract with a missing or unknown field (one line naming it)."""


@dataclass(frozen=True)
class ModelContract:
    """What an encoder expects at evaluation time; see the module docstring."""

    objective: str = "stt"
    input: str = "lab"
    normalization: str = "lab"
    arch: str = "resnet18"
    preset: str = "eval_d8"
    stride: int = 8
    train_preset: str = "stt_student"
    protocol: str = "custom"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ContractError(f"contract objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if self.input not in INPUTS:
            raise ContractError(f"contract input: expected one of {INPUTS}, got {self.input!r}")
        if self.normalization != NORMALIZATION[self.input]:
            raise ContractError(f"contract normalization: {self.input} input is normalised "
                                f"{NORMALIZATION[self.input]!r}, got {self.normalization!r}")
        if self.protocol not in PROTOCOLS:
            raise ContractError(f"contract protocol: expected one of {PROTOCOLS}, got {self.protocol!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.protocol == "custom":  # recorded only when a paper's protocol is preferred, so the
            del data["protocol"]  # pipeline's own contracts (and evaluate fingerprints) stay as they were
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "contract") -> ModelContract:
        """Build from a dict (a ``.pt``'s entry or registry tags without the prefix).

        Raises:
            ContractError: an unknown or missing field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data) - {"protocol"})  # optional: older contracts lack it
        if unknown or missing:
            raise ContractError(f"{source}: contract fields unknown {unknown}, missing {missing}; "
                                f"expected {sorted(names)}")
        text = {k: str(v) for k, v in data.items() if k != "stride"}  # protocol defaults to custom
        return cls(**text, stride=int(data["stride"]))

    def tags(self) -> dict[str, str]:
        """Registry version tags: ``stcorr.contract.<field>`` plus a plain ``objective``."""
        tags = {f"{TAG_PREFIX}{k}": str(v) for k, v in self.to_dict().items()}
        tags["objective"] = self.objective
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], source: str) -> ModelContract | None:
        """The contract recorded in registry tags, or None when the version has none."""
        found = {k[len(TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
        return cls.from_dict(found, source) if found else None

    def describe(self) -> str:
        """One phrase for messages: ``stt, rgb input (imagenet), resnet18 eval_d8``."""
        return f"{self.objective}, {self.input} input ({self.normalization}), {self.arch} {self.preset}"


EVAL_PRESET = {"stt_student": "eval_d8", "stt_student_pool": "eval_student_pool_d8",
               "stt_teacher": "eval_pool_d8", "crw": "crw"}  # training preset -> evaluation preset


def override_contract(name: str, arch: str = "resnet18", stride: int = 8,
                      train_preset: str | None = None) -> ModelContract:
    """The contract an ``--objective`` override spells (and the training stages record).

    ``stt``: Lab input (the STT reference student); ``stt-rgb``: STT trained with
    ``finetune.stt.student_input: rgb``; ``crw``: RGB in the ``crw`` preset; ``moco``: the
    spatial stage (and the teacher), RGB in ``eval_pool_d8``, its own max-pool geometry with
    layer3's stride removed. STT students default to the paper's ``stt_student`` (evaluated in
    ``eval_d8``, or ``eval_d4`` at stride 4); ``train_preset`` names another training preset.

    Raises:
        ContractError: an unknown name or training preset.
    """
    if name not in OVERRIDES:
        raise ContractError(f"--objective: expected one of {', '.join(OVERRIDES)}, got {name!r}")
    default = {"crw": "crw", "moco": "stt_teacher"}.get(name, "stt_student")
    trained = train_preset or default
    if trained not in EVAL_PRESET:
        raise ContractError(f"training preset {trained!r}: expected one of {sorted(EVAL_PRESET)}")
    contract = ModelContract("stt", "lab", "lab", arch, EVAL_PRESET[trained], 8, trained)
    if name != "stt":
        contract = dataclasses.replace(contract, objective=name.removesuffix("-rgb"), input="rgb",
                                       normalization="imagenet")
    return with_stride(contract, stride)


def with_stride(contract: ModelContract, stride: int) -> ModelContract:
    """The contract evaluated at ``evaluate.stride``: ``eval_d8`` <-> ``eval_d4`` (the STT test
    presets); every other preset is stride 8 only and stays as it is."""
    if contract.preset not in ("eval_d8", "eval_d4") or stride == contract.stride:
        return contract
    return dataclasses.replace(contract, preset="eval_d8" if stride == 8 else "eval_d4", stride=stride)


def disagreement(contract: ModelContract, other: ModelContract) -> list[str]:
    """Fields where ``other`` (an override) differs from ``contract`` in what evaluation uses."""
    return [f"{k} {getattr(contract, k)!s} vs {getattr(other, k)!s}"
            for k in ("objective", "input", "preset") if getattr(contract, k) != getattr(other, k)]


def pack(state: Mapping[str, Tensor], contract: ModelContract) -> dict[str, Any]:
    """What an exported ``.pt`` holds: the state dict and the contract."""
    return {STATE_KEY: dict(state), CONTRACT_KEY: contract.to_dict()}


def unpack(obj: Mapping[str, Any], source: str) -> tuple[dict[str, Tensor], ModelContract | None]:
    """(state dict, contract or None) of a loaded ``.pt``: packed, nested or a plain state dict.

    Raises:
        ContractError: a packed file whose contract is malformed.
    """
    raw = obj.get(CONTRACT_KEY)
    contract = ModelContract.from_dict(raw, source) if isinstance(raw, Mapping) else None
    inner = obj.get(STATE_KEY)
    state = dict(inner) if isinstance(inner, Mapping) else {
        k: v for k, v in obj.items() if k != CONTRACT_KEY}
    return state, contract
