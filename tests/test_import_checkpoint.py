"""``stcorr import-checkpoint``: each paper's checkpoint layout, built here from a torchvision
ResNet-18, imports and gives the features of the source network run by hand as its repo runs it."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from typer.testing import CliRunner

from stcorr.cli import app
from stcorr.config import PipelineConfig, TrackingConfig, load_config
from stcorr.eval.features import FeatureExtractor, build_network, load_model
from stcorr.models.contract import pack
from stcorr.models.importers import ImportFormatError, import_checkpoint

IMAGENET = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))


def _source(arch: str = "resnet18", seed: int = 0) -> nn.Module:
    """A torchvision ResNet with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _mmcv(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """torchvision names -> mmcv ``ConvModule`` names (the inverse of VFS's converter)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            name = f"conv1.{'conv' if parts[0] == 'conv1' else 'bn'}.{parts[-1]}"
        elif parts[0] == "fc":
            continue
        elif parts[2] == "downsample":
            name = f"{parts[0]}.{parts[1]}.downsample.{'conv' if parts[3] == '0' else 'bn'}.{parts[-1]}"
        else:
            kind, index = ("conv", parts[2][-1]) if parts[2].startswith("conv") else ("bn", parts[2][-1])
            name = f"{parts[0]}.{parts[1]}.conv{index}.{kind}.{parts[-1]}"
        out[prefix + name] = value
    return out


def _with_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state.items()}


def _trunk(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _crw(s: dict[str, Tensor]) -> dict:
    """videowalk train.py: {"model", "optimizer", "lr_scheduler", "epoch", "args"}."""
    head = {"selfsim_fc.0.weight": torch.randn(128, 512), "selfsim_fc.0.bias": torch.zeros(128)}
    model = {**_with_prefix(_trunk(s), "encoder.model."), **head}
    return {"model": model, "epoch": 24, "args": argparse.Namespace(temp=0.05, clip_len=4)}


def _stt(s: dict[str, Tensor]) -> dict:
    """mmcv runner {"meta", "state_dict"}; STT's framework holds the student and the teacher."""
    return {"meta": {"epoch": 800}, "state_dict": {**_mmcv(s, "backbone."), **_mmcv(s, "backbone_t.")}}


def _vfs(s: dict[str, Tensor]) -> dict:
    head = {"img_head.projection_fcs.0.fc.weight": torch.randn(8, 512)}
    return {"meta": {}, "state_dict": {**_mmcv(s, "backbone."), **head}}


def _moco(s: dict[str, Tensor]) -> dict:
    """facebookresearch/moco main_moco.py: DDP keys, MLP head fc.0/fc.2, key encoder, queue."""
    head = {"module.encoder_q.fc.0.weight": torch.randn(512, 512),
            "module.encoder_q.fc.2.weight": torch.randn(128, 512)}
    rest = {"module.queue": torch.randn(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    state = {**_with_prefix(_trunk(s), "module.encoder_q."), **head, **_with_prefix(s, "module.encoder_k."),
             **rest}
    return {"epoch": 200, "arch": "resnet18", "state_dict": state}


def _sfc(s: dict[str, Tensor]) -> dict:
    """SFC train.py: {"model": FineGrained.state_dict(), "optimizer", ...}."""
    head = {"online_projector.net.0.weight": torch.randn(8, 512, 1, 1)}
    return {"model": {**_with_prefix(s, "online_encoder."), **_with_prefix(s, "target_encoder."), **head}}


LAYOUTS: dict[str, Callable[[dict[str, Tensor]], dict]] = {
    "crw": _crw, "stt": _stt, "vfs": _vfs, "moco": _moco, "sfc": _sfc, "torchvision": dict,
}


def _by_hand(net: nn.Module, x: Tensor, fmt: str, stride: int = 8) -> Tensor:
    """res4 (layer3) of the source network, re-strided as the format's repo does it (float64
    when ``x`` is: layouts then differ by rounding far below the test's 1e-5)."""
    net = copy.deepcopy(net).to(x.dtype)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    pool: nn.Module = net.maxpool
    if fmt == "stt" and stride == 8:  # res18_d8: strides (1, 2, 2, 1), pool_type none
        pool = nn.Identity()
    elif fmt == "stt":  # res18_d4: strides (1, 1, 1, 1), pool_type mean
        pool = nn.AvgPool2d(3, 2, 1)
        for layer in (net.layer2, net.layer3):
            layer[0].conv1.stride = layer[0].downsample[0].stride = (1, 1)
    else:  # CRW/SFC modify(), VFS strides (1, 2, 1, 1): every conv of layer3 at stride 1
        for m in net.layer3.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
    if fmt == "crw":  # modify(padding='reflect') on every padded conv
        for m in convs:
            if sum(m.padding) > 0:
                m.padding_mode = "reflect"
    with torch.no_grad():
        y = pool(net.relu(net.bn1(net.conv1(x))))
        return net.layer3(net.layer2(net.layer1(y)))


def _save(tmp_path: Path, fmt: str, net: nn.Module) -> Path:
    path = tmp_path / f"{fmt}.pth"
    torch.save(LAYOUTS[fmt](net.state_dict()), path)
    return path


def _stcorr_res4(tmp_path: Path, path: Path, fmt: str, x: Tensor, stride: int = 8) -> Tensor:
    imported = import_checkpoint(path, stride=stride)
    assert imported.format == fmt
    packed = tmp_path / f"{fmt}-stcorr.pt"
    torch.save(pack(imported.state, imported.contract), packed)
    spec = load_model(str(packed), stride=stride)
    net = build_network(spec)
    assert net is not None
    with torch.no_grad():
        return net.double()(x)["res4"]


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_each_format_gives_the_source_networks_features(fmt: str, tmp_path: Path, one_thread: None) -> None:
    net = _source()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = _stcorr_res4(tmp_path, _save(tmp_path, fmt, net), fmt, x)
    theirs = _by_hand(net, x, fmt)
    assert ours.shape == theirs.shape == (2, 256, 8, 8)
    assert (ours - theirs).abs().max() < 1e-5


def test_stt_stride4_uses_the_mean_pool_preset(tmp_path: Path, one_thread: None) -> None:
    net = _source()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = _stcorr_res4(tmp_path, _save(tmp_path, "stt", net), "stt", x, stride=4)
    theirs = _by_hand(net, x, "stt", stride=4)
    assert ours.shape == theirs.shape == (1, 256, 16, 16)
    assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("fmt", ["stt", "crw"])
def test_contract_feeds_the_papers_colour_space(fmt: str, tmp_path: Path, one_thread: None) -> None:
    """The extractor normalises frames as the contract says: Lab (STT) or ImageNet RGB (CRW)."""
    from skimage.color import rgb2lab

    net = _source()
    imported = import_checkpoint(_save(tmp_path, fmt, net))
    packed = tmp_path / "enc.pt"
    torch.save(pack(imported.state, imported.contract), packed)
    frames = np.random.default_rng(3).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    ours = FeatureExtractor(load_model(str(packed)))(frames)
    if fmt == "stt":
        lab = torch.from_numpy(rgb2lab(frames / 255.0)).float().permute(0, 3, 1, 2)
        x = (lab - torch.tensor([50.0, 0, 0]).view(3, 1, 1)) / torch.tensor([50.0, 127, 127]).view(3, 1, 1)
    else:
        rgb = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 255.0
        x = (rgb - IMAGENET[0].view(3, 1, 1)) / IMAGENET[1].view(3, 1, 1)
    theirs = F.normalize(_by_hand(net, x, fmt), dim=1)
    assert (ours - theirs).abs().max() < 1e-4


def test_contracts_record_colour_preset_and_protocol(tmp_path: Path) -> None:
    net = _source()
    got = {fmt: import_checkpoint(_save(tmp_path, fmt, net)).contract for fmt in LAYOUTS}
    assert (got["stt"].input, got["stt"].normalization, got["stt"].preset, got["stt"].protocol) == (
        "lab", "lab", "eval_d8", "stt")
    assert (got["crw"].input, got["crw"].preset, got["crw"].protocol) == ("rgb", "crw", "crw")
    assert (got["vfs"].input, got["vfs"].preset, got["vfs"].protocol) == ("rgb", "eval_pool_d8", "stt")
    assert {got[f].objective for f in ("moco", "sfc", "torchvision")} == {"moco", "sfc", "supervised"}
    assert all(c.arch == "resnet18" and c.stride == 8 for c in got.values())
    s4 = import_checkpoint(_save(tmp_path, "stt", net), stride=4).contract
    assert (s4.preset, s4.stride) == ("eval_d4", 4)
    with pytest.raises(ImportFormatError, match="only STT checkpoints have a stride-4 preset"):
        import_checkpoint(_save(tmp_path, "crw", net), stride=4)


def test_bad_checkpoints_fail_with_one_line(tmp_path: Path) -> None:
    net = _source()
    state = net.state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("layer2.1.")}
    torch.save(LAYOUTS["moco"](partial), tmp_path / "partial.pth")
    with pytest.raises(ImportFormatError, match=r"first missing key layer2\.1\.conv1\.weight, "
                       r"first unexpected key None"):
        import_checkpoint(tmp_path / "partial.pth")
    extra = {**state, "layer3.0.se.weight": torch.ones(4)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ImportFormatError, match=r"missing key None, first unexpected key layer3\.0\.se"):
        import_checkpoint(tmp_path / "extra.pth")
    torch.save(LAYOUTS["crw"](_source("resnet50").state_dict()), tmp_path / "r50.pth")
    with pytest.raises(ImportFormatError, match=r"holds a resnet50 \(crw layout\); expected a resnet18"):
        import_checkpoint(tmp_path / "r50.pth", arch="resnet18")
    torch.save(_source("resnet34").state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ImportFormatError, match="holds a resnet34"):
        import_checkpoint(tmp_path / "r34.pth")
    torch.save({"state_dict": _mmcv(state, "backbone.")}, tmp_path / "bare-mmcv.pth")
    with pytest.raises(ImportFormatError, match="pass --format stt or --format vfs"):
        import_checkpoint(tmp_path / "bare-mmcv.pth")
    assert import_checkpoint(tmp_path / "bare-mmcv.pth", "vfs").contract.input == "rgb"
    torch.save({"state_dict": {"a.b": torch.ones(1)}}, tmp_path / "other.pth")
    with pytest.raises(ImportFormatError, match=r"unknown checkpoint layout \(first keys \['a\.b'\]\)"):
        import_checkpoint(tmp_path / "other.pth")
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(3000))  # a damaged download
    with pytest.raises(ImportFormatError, match=r"cannot read checkpoint \(corrupt or not a torch\.save"):
        import_checkpoint(tmp_path / "noise.pth")


def test_a_pickled_class_needs_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse.Namespace (CRW's args) is plain data; any other class needs --trust-pickle."""
    from datetime import date

    path = tmp_path / "odd.pth"
    torch.save({"model": _source().state_dict(), "saved": date(2021, 12, 10)}, path)
    with pytest.raises(ImportFormatError, match=r"refuses datetime\.date; pass --trust-pickle"):
        import_checkpoint(path)
    assert import_checkpoint(path, trust=True).format == "torchvision"
    assert "unpickled fully (--trust-pickle)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], TrackingConfig]:
    root = tmp_path_factory.mktemp("mlflow")
    sets = ["--set", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "--set", f"tracking.artifact_location={root / 'artifacts'}"]
    return sets, TrackingConfig(uri=f"sqlite:///{root / 'mlflow.db'}", artifact_location=None)


def _registered(tracking: TrackingConfig) -> list[str]:
    from mlflow import MlflowClient

    return sorted(m.name for m in MlflowClient(tracking.uri).search_registered_models())


def test_cli_registers_a_version_with_its_contract(store: tuple[list[str], TrackingConfig],
                                                   tmp_path: Path, one_thread: None) -> None:
    sets, tracking = store
    net = _source()
    result = CliRunner().invoke(app, ["import-checkpoint", str(_save(tmp_path, "crw", net)), *sets])
    assert result.exit_code == 0, result.stderr
    ref = result.stdout.split()[0]
    assert ref == "models:/crw-resnet18/1"
    spec = load_model(ref, tracking=tracking)
    assert (spec.input, spec.preset, spec.contract.protocol) == ("rgb", "crw", "crw")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        ours = build_network(spec).double()(x)["res4"]  # type: ignore[union-attr]
    assert (ours - _by_hand(net, x, "crw")).abs().max() < 1e-5


def test_cli_failures_are_one_line_and_register_nothing(store: tuple[list[str], TrackingConfig],
                                                        tmp_path: Path) -> None:
    sets, tracking = store
    before = _registered(tracking)
    state = {k: v for k, v in _source().state_dict().items() if not k.startswith("layer4.1.bn2")}
    torch.save(LAYOUTS["sfc"](state), tmp_path / "partial.pth")
    for args, code in ((["import-checkpoint", str(tmp_path / "partial.pth")], 1),
                       (["import-checkpoint", str(tmp_path / "none.pth")], 1),
                       (["import-checkpoint", str(tmp_path / "partial.pth"), "--format", "onnx"], 2)):
        result = CliRunner().invoke(app, [*args, *sets])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == code, result.stderr  # 2: a usage error (unknown --format)
        assert len(lines) == 1 and lines[0].startswith("stcorr: error: "), result.stderr
    assert "first missing key layer4.1.bn2.weight" in CliRunner().invoke(
        app, ["import-checkpoint", str(tmp_path / "partial.pth"), *sets]).stderr
    assert _registered(tracking) == before


def _init_cfg(tmp_path: Path, init: str) -> PipelineConfig:
    return load_config(overrides=[f"storage.root={tmp_path / 'store'}", "tracking.uri=null",
                                  f"pretrain.init={init}"])


def test_pretrain_init_freezes_an_imported_encoder_as_the_teacher(tmp_path: Path, one_thread: None) -> None:
    """No MoCo: the pretrain stage adopts the MoCo checkpoint; the teacher is that network."""
    from stcorr.models.contract import unpack
    from stcorr.stages import run_pretrain, run_teacher
    from stcorr.train.teacher import build_teacher

    net = _source()
    cfg = _init_cfg(tmp_path, str(_save(tmp_path, "moco", net)))
    out = run_pretrain(cfg, "no-shards-needed")
    teacher = run_teacher(cfg, out)
    contract = unpack(torch.load(teacher.encoder, weights_only=True), teacher.encoder)[1]
    assert contract is not None and (contract.objective, contract.input) == ("moco", "rgb")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        ours = build_teacher(Path(teacher.encoder), "resnet18").double()(x)["res5"]
        theirs = net.double().layer4(net.layer3(net.layer2(net.layer1(
            net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
    assert (ours - theirs).abs().max() < 1e-5
    # the fingerprint follows the file's bytes, not its name
    other = _source(seed=1)
    torch.save(LAYOUTS["moco"](other.state_dict()), tmp_path / "moco.pth")
    assert run_pretrain(cfg, "").fingerprint != out.fingerprint


def test_pretrain_init_is_validated(tmp_path: Path) -> None:
    from stcorr.stages import init_file, run_pretrain
    from stcorr.tracking import ModelRefError

    with pytest.raises(ModelRefError, match=r"^pretrain\.init: .*none\.pt: model file not found"):
        init_file(_init_cfg(tmp_path, str(tmp_path / "none.pt")))
    stt = _init_cfg(tmp_path, str(_save(tmp_path, "stt", _source())))
    with pytest.raises(ValueError, match=r"^pretrain\.init: .* takes lab input .* the teacher is fed RGB"):
        run_pretrain(stt, "")
    torch.save(_source("resnet50").state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match=r"is a resnet50; pretrain\.arch is resnet18"):
        run_pretrain(_init_cfg(tmp_path, str(tmp_path / "r50.pth")), "")
