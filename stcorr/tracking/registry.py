"""The MLflow model registry for encoders: register a version, point an alias, resolve a reference.

An encoder is stored as a ``.pt`` file holding a ``state_dict`` (torchvision key names) and
its input contract (:mod:`stcorr.models.contract`) in the run's artifacts and registered from
there. That avoids pickled modules and MLflow 3's torch.export default (``pt2`` needs an input
example and cannot move devices), and any code can load it. The contract is also written as
version tags (``stcorr.contract.input``, ``...preset``, ...), so the registry UI shows how a
version must be fed.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stcorr.config import PipelineConfig, TrackingConfig
from stcorr.models.contract import ModelContract, pack, unpack

if TYPE_CHECKING:  # torch-free at import time, as the rest of this module
    from stcorr.models.importers import Imported

ENCODER_ARTIFACT_DIR = "encoder"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class ModelRefError(ValueError):
    """A model reference does not resolve; one line naming it and what exists."""


def register_encoder(
    client: Any, run_id: str, encoder_file: Path, *, model_name: str, alias: str | None, tags: dict[str, str]
) -> str:
    """Log ``encoder_file`` under the run's ``encoder/`` artifacts and register it; return the version.

    Args:
        client: an ``MlflowClient`` on the tracking store.
        run_id: the stage run that produced the encoder.
        encoder_file: local ``.pt`` state dict.
        model_name: registered model name (created on first use).
        alias: alias to point at the new version (e.g. ``teacher``, ``candidate``), or None.
        tags: version tags (stage, fingerprint, sha256 ...); the file's input contract is
            added as ``stcorr.contract.*`` tags.
    """
    import torch
    from mlflow.exceptions import MlflowException

    _, contract = unpack(torch.load(encoder_file, map_location="cpu", weights_only=True), str(encoder_file))
    if contract is not None:
        tags = {**tags, **contract.tags()}

    client.log_artifact(run_id, str(encoder_file), artifact_path=ENCODER_ARTIFACT_DIR)
    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{ENCODER_ARTIFACT_DIR}"
    version = client.create_model_version(model_name, source, run_id=run_id, tags=tags)
    if alias:
        client.set_registered_model_alias(model_name, alias, version.version)
    return str(version.version)


def register_import(cfg: PipelineConfig, imported: Imported, source: Path, model_name: str) -> str:
    """Register an imported checkpoint (:mod:`stcorr.models.importers`) in its own MLflow run.

    The encoder is stored as every stcorr encoder is (torchvision keys + contract, the
    contract also as version tags); the run and the version carry the source file's name,
    sha256 and format. Returns the new version.
    """
    import hashlib

    import torch

    from stcorr.tracking.stage_runs import stage_run

    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    tags = {"stcorr.stage": "import", "stcorr.import.format": imported.format,
            "stcorr.import.source": source.name, "sha256": sha}
    with stage_run(cfg, "import", sha, run_name=f"import-{imported.format}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        run.set_tags(tags)
        encoder = Path(tmp) / "encoder.pt"
        torch.save(pack(imported.state, imported.contract), encoder)
        return register_encoder(run.client, run.run_id, encoder, model_name=model_name, alias=None,
                                tags=tags)


def resolve_encoder(ref: str, tracking: TrackingConfig | None) -> Path:
    """A local encoder file for ``ref``: ``models:/name@alias``, ``models:/name/3`` or a file path.

    Raises:
        ModelRefError: the file does not exist, or the registry has no such model/alias/version.
    """
    match = _MODELS_URI.match(ref)
    if match is None:
        path = Path(ref)
        if not path.is_file():
            raise ModelRefError(
                f"{ref}: model file not found; expected a .pt state dict or models:/name@alias"
            )
        return path
    if tracking is None or tracking.uri is None:
        raise ModelRefError(f"{ref}: a registry reference needs tracking.uri (MLflow); it is null")
    return _download(ref, match, tracking)


def resolve_init(ref: str, tracking: TrackingConfig | None) -> Path:
    """``resolve_encoder`` for ``pretrain.init``: its errors name the config key."""
    try:
        return resolve_encoder(ref, tracking)
    except ModelRefError as err:
        raise ModelRefError(f"pretrain.init: {err}") from None


def registry_contract(ref: str, tracking: TrackingConfig | None) -> ModelContract | None:
    """The contract in the tags of the registry version ``ref`` names (None: a file, or none)."""
    match = _MODELS_URI.match(ref)
    if match is None or tracking is None or tracking.uri is None:
        return None
    return ModelContract.from_tags(_version(ref, match, tracking).tags or {}, ref)


def _version(ref: str, match: re.Match[str], tracking: TrackingConfig) -> Any:
    """The registry's model version object for a ``models:/`` reference.

    Raises:
        ModelRefError: no store, or no such model, alias or version; the message names the store.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from stcorr.tracking.stage_runs import resolve_uri

    uri = resolve_uri(tracking.uri or "")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MlflowClient would create an empty store there: say where we looked instead
        raise ModelRefError(f"{ref}: no registry at {uri} (no such file); check tracking.uri")
    client = MlflowClient(uri)
    name, alias, version = match.group("name"), match.group("alias"), match.group("version")
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise ModelRefError(f"{ref}: {_what_exists(client, name)} in the registry at {uri}") from None


def _download(ref: str, match: re.Match[str], tracking: TrackingConfig) -> Path:
    import mlflow

    from stcorr.tracking.stage_runs import resolve_uri

    found = _version(ref, match, tracking)
    target = Path(tempfile.mkdtemp(prefix="stcorr-model-"))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=found.source, dst_path=str(target), tracking_uri=resolve_uri(tracking.uri or "")
    )
    files = sorted(Path(local).glob("*.pt"))
    if not files:
        raise ModelRefError(f"{ref}: version {found.version} holds no .pt encoder file at {found.source}")
    return files[0]


def _what_exists(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return f"no registered model named {name!r}"
    aliases = sorted(model.aliases) if model.aliases else []
    return f"no such alias or version of {name!r} (aliases: {', '.join(aliases) or 'none'})"
