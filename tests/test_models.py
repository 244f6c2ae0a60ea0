"""ResNet backbones: preset output sizes, torchvision key names, checkpoint errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from stcorr.models.resnet import (
    CHANNELS,
    PRESETS,
    build_backbone,
    encoder_state_dict,
    fold_batchnorm,
    load_encoder_state,
)

# (preset, expected stride per default tap), from the docs/methods.md 2.3 table and CRW's modify()
EXPECTED_STRIDES = {
    "stt_student": {"res3": 4, "res4": 8, "res5": 32},
    "stt_student_pool": {"res3": 4, "res4": 8, "res5": 32},
    "stt_teacher": {"res5": 32},
    "eval_d8": {"res4": 8},
    "eval_d4": {"res4": 4},
    "eval_pool_d8": {"res4": 8},
    "eval_student_pool_d8": {"res4": 8},
    "crw": {"res4": 8, "res5": 8},
}


def _check_shapes(preset: str, arch: str, h: int, w: int) -> None:
    model = build_backbone(preset, arch).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, h, w))
    assert set(feats) == set(EXPECTED_STRIDES[preset])
    for tap, stride in EXPECTED_STRIDES[preset].items():
        expected = (1, CHANNELS[arch][tap], math.ceil(h / stride), math.ceil(w / stride))
        assert tuple(feats[tap].shape) == expected, (preset, tap)
        assert model.out_strides[tap] == stride
        assert model.out_channels[tap] == CHANNELS[arch][tap]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_resnet18_preset_sizes_square_and_non_square(preset: str) -> None:
    _check_shapes(preset, "resnet18", 256, 256)
    _check_shapes(preset, "resnet18", 96, 160)


def test_resnet50_teacher_and_student_sizes() -> None:
    _check_shapes("stt_teacher", "resnet50", 256, 256)
    _check_shapes("stt_student", "resnet50", 64, 96)  # all three R50 taps, small input


def test_teacher_preset_equals_plain_torchvision_trunk() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    model = build_backbone("stt_teacher", "resnet18", out=("res3", "res5")).eval()
    load_encoder_state(model, reference.state_dict(), "torchvision resnet18")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        h = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        res3 = reference.layer2(reference.layer1(h))
        res5 = reference.layer4(reference.layer3(res3))
        feats = model(x)
    torch.testing.assert_close(feats["res3"], res3)
    torch.testing.assert_close(feats["res5"], res5)


def test_crw_preset_strides_and_reflect_padding() -> None:
    model = build_backbone("crw", "resnet18")
    deep = [m for name in ("layer3", "layer4") for m in getattr(model, name).modules()]
    convs = [m for m in deep if isinstance(m, nn.Conv2d)]
    assert convs and all(c.stride == (1, 1) for c in convs)
    padded = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert padded and all(c.padding_mode == "reflect" for c in padded)
    assert isinstance(model.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize(("preset", "arch"), [("eval_d8", "resnet18"), ("crw", "resnet18"),
                                           ("eval_pool_d8", "resnet50")])
def test_folded_batchnorm_gives_the_same_features(preset: str, arch: str) -> None:
    """Folding each eval-mode BatchNorm into its convolution is exact in real arithmetic: in
    float64 the two networks agree to rounding, with statistics far from (0, 1), through basic
    and bottleneck blocks, downsample branches and CRW's reflect padding; the original keeps its
    BatchNorms."""
    torch.manual_seed(3)
    model = build_backbone(preset, arch).double()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.1, 4)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    x = torch.randn(2, 3, 48, 80, dtype=torch.float64)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    for tap in expected:
        torch.testing.assert_close(got[tap], expected[tap], rtol=1e-9, atol=1e-9)


def test_eval_preset_does_not_build_layer4() -> None:
    model = build_backbone("eval_d8", "resnet18")
    assert not hasattr(model, "layer4")
    assert not any(k.startswith("layer4.") for k in model.state_dict())


def test_torchvision_key_names_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_backbone("stt_teacher", "resnet18")
    state = encoder_state_dict(source)
    tv_keys = {k for k in torchvision.models.resnet18(weights=None).state_dict() if "fc." not in k}
    assert set(state) == tv_keys
    # saved the way a raw MoCo checkpoint is: prefixed, with fc, encoder_k and queue entries
    wrapped = {f"module.encoder_q.{k}": v for k, v in state.items()}
    wrapped["module.encoder_q.fc.0.weight"] = torch.zeros(3, 512)
    wrapped["module.encoder_k.conv1.weight"] = torch.zeros(1)
    wrapped["module.queue"] = torch.zeros(128, 8)
    path = tmp_path / "moco.pt"
    torch.save({"state_dict": wrapped, "epoch": 3}, path)
    loaded = build_backbone("stt_student", "resnet18", state_dict_path=path)
    for k, v in encoder_state_dict(loaded).items():
        torch.testing.assert_close(v, state[k])
    crw_style = {f"encoder.{k}": v * 0 for k, v in state.items()} | {"head.weight": torch.ones(1)}
    load_encoder_state(loaded, crw_style, "crw state")  # CRW's module prefix, head dropped
    assert loaded.conv1.weight.abs().sum() == 0
    partial = build_backbone("eval_d8", "resnet18", state_dict_path=path)  # layer4 ignored
    torch.testing.assert_close(partial.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])


def test_wrong_architecture_checkpoint_names_both(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    message = "ckpt.pt holds a resnet50 state dict (layer1.0.conv3 present); this model is resnet18"
    with pytest.raises(ValueError, match=re.escape(message)):
        build_backbone("eval_d8", "resnet18", state_dict_path=path)
    r18 = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), r18)
    with pytest.raises(ValueError, match=r"r18\.pt holds a resnet18 state dict .*this model is resnet50"):
        build_backbone("eval_d8", "resnet50", state_dict_path=r18)


def test_unreadable_checkpoint_raises_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "cut.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"cut\.pt: cannot read checkpoint"):
        build_backbone("eval_d8", state_dict_path=bad)
    with pytest.raises(FileNotFoundError, match=r"absent\.pt: checkpoint not found"):
        build_backbone("eval_d8", state_dict_path=tmp_path / "absent.pt")


def test_missing_keys_and_bad_arguments_raise() -> None:
    model = build_backbone("eval_d8", "resnet18")
    state = encoder_state_dict(model)
    del state["layer2.0.conv1.weight"]
    with pytest.raises(ValueError, match=r"partial: state dict does not match.*layer2\.0\.conv1"):
        load_encoder_state(model, state, "partial")
    with pytest.raises(ValueError, match="backbone preset 'd16'"):
        build_backbone("d16")
    with pytest.raises(ValueError, match="backbone out"):
        build_backbone("crw", out=("res2",))
