"""A model's input contract: stored in the .pt and the registry, read by evaluate and track."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stcorr.cli import app
from stcorr.config import SynthConfig, TrackingConfig
from stcorr.data.synthetic import generate
from stcorr.eval.features import load_model
from stcorr.models.contract import (
    ContractError,
    ModelContract,
    override_contract,
    pack,
    unpack,
    with_stride,
)
from stcorr.models.resnet import build_backbone, encoder_state_dict, load_encoder_state
from stcorr.tracking import register_encoder, registry_contract, resolve_encoder

RGB_STT = override_contract("stt-rgb")


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGB-trained STT student saved as the finetune stage saves it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    torch.save(pack(encoder_state_dict(build_backbone("stt_student", "resnet18")), RGB_STT), path)
    return path


def test_pack_unpack_and_tags_round_trip(packed: Path) -> None:
    state, contract = unpack(torch.load(packed, weights_only=True), str(packed))
    assert contract == RGB_STT and "conv1.weight" in state
    assert ModelContract.from_tags(contract.tags(), "tags") == contract
    assert contract.tags()["stcorr.contract.input"] == "rgb" and contract.tags()["objective"] == "stt"
    plain, none = unpack(state, "plain")  # a bare state dict from elsewhere: no contract
    assert none is None and plain.keys() == state.keys()
    net = build_backbone("eval_d8", "resnet18", out=("res4",))
    load_encoder_state(net, torch.load(packed, weights_only=True), str(packed))  # loaders unwrap it
    assert with_stride(contract, 4).preset == "eval_d4"
    assert with_stride(override_contract("crw"), 4).stride == 8  # the crw preset is stride 8 only


def test_bad_contracts_are_one_line() -> None:
    with pytest.raises(ContractError, match="contract input: expected one of"):
        ModelContract(input="hsv")
    with pytest.raises(ContractError, match="normalised 'imagenet', got 'lab'"):
        ModelContract(input="rgb", normalization="lab")
    with pytest.raises(ContractError, match=r"x\.pt: contract fields unknown \['colour'\]"):
        ModelContract.from_dict({**RGB_STT.to_dict(), "colour": "rgb"}, "x.pt")


def test_registry_round_trip(packed: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=None)
    client = MlflowClient(tracking.uri)
    experiment = client.create_experiment("contracts", artifact_location=str(tmp_path / "art"))
    run = client.create_run(experiment).info.run_id
    version = register_encoder(client, run, packed, model_name="enc", alias="candidate", tags={})
    ref = "models:/enc@candidate"
    assert registry_contract(ref, tracking) == RGB_STT
    assert client.get_model_version("enc", version).tags["stcorr.contract.preset"] == "eval_d8"
    assert unpack(torch.load(resolve_encoder(ref, tracking), weights_only=True), ref)[1] == RGB_STT
    spec = load_model(ref, tracking=tracking)
    assert (spec.input, spec.preset, spec.contract) == ("rgb", "eval_d8", RGB_STT)
    # a version whose file predates contracts is still read right: from its tags
    bare = tmp_path / "bare" / "encoder.pt"
    bare.parent.mkdir()
    torch.save(unpack(torch.load(packed, weights_only=True), "p")[0], bare)
    old = register_encoder(client, run, bare, model_name="enc", alias=None, tags=RGB_STT.tags())
    assert load_model(f"models:/enc/{old}", tracking=tracking).contract == RGB_STT


def test_evaluate_reads_the_contract_and_warns_on_a_disagreeing_override(packed: Path,
                                                                          tmp_path: Path) -> None:
    cfg = SynthConfig(images=0, videos=0, davis_sequences=1, vip_sequences=0, jhmdb_sequences=0,
                      benchmark_frames=3, benchmark_size=(64, 96))
    davis = generate(tmp_path / "synth", cfg)["davis"]
    args = ["evaluate", "--benchmark", "davis", "--root", str(davis), "--model", str(packed),
            "--no-ray", "--set", "evaluate.n_context=2", "--set", "evaluate.visualize=false"]
    quiet = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert quiet.exit_code == 0, quiet.stderr
    assert "warning" not in quiet.stderr
    loud = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--objective", "stt"])
    assert loud.exit_code == 0, loud.stderr
    warning = [line for line in loud.stderr.splitlines() if line.startswith("stcorr: warning:")]
    assert len(warning) == 1 and "--objective stt disagrees with the model's contract" in warning[0]
    assert "input rgb vs lab" in warning[0]
    # the override really changes the input: Lab features give another score than RGB ones
    assert (tmp_path / "a/davis-summary.json").read_text() != (tmp_path / "b/davis-summary.json").read_text()
