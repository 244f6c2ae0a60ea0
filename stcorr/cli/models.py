"""Model commands: ``stcorr import-checkpoint``.

Brings a checkpoint of the papers' code (CRW, STT, VFS, MoCo, SFC, torchvision) into the
registry with its input contract, so ``evaluate``, ``track`` and ``pretrain.init`` run it as
its authors did (:mod:`stcorr.models.importers`).
"""

from pathlib import Path
from typing import Annotated

import typer

from stcorr.cli.common import ConfigOpt, SetOpt, _load, app, examples, friendly_errors
from stcorr.config import ConfigError

# No `from __future__ import annotations` here: typer reads these annotations at runtime.
FORMAT_HELP = "auto (from the keys) | crw | stt | vfs | moco | sfc | torchvision"


@app.command("import-checkpoint", epilog=examples(
    "stcorr import-checkpoint pretrained.pth --format crw --name crw-r18",
    "stcorr import-checkpoint stt_r18_d4.pth --stride 4",
    "stcorr import-checkpoint moco_v2_800ep.pth.tar --arch resnet50"))
@friendly_errors
def import_checkpoint(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The checkpoint (.pth, .pth.tar, .pt).")],
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help=FORMAT_HELP)] = "auto",
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME",
                                 help="Registered model name (default: <format>-<arch>).")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", metavar="ARCH",
                                 help="resnet18 | resnet50: fail unless the file holds it.")
    ] = None,
    stride: Annotated[
        int, typer.Option("--stride", metavar="N", help="8, or 4 for STT's stride-4 models (eval_d4).")
    ] = 8,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Unpickle fully when a weights-only load is "
                           "refused (it can run code: only for a file you trust).")
    ] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Import a published checkpoint into the model registry.

    A CRW, STT, VFS, MoCo, SFC or torchvision ResNet checkpoint becomes a model version
    carrying its input contract (colour space, normalisation, preset, protocol).
    """
    from stcorr.models.importers import FORMATS
    from stcorr.models.importers import import_checkpoint as read_foreign
    from stcorr.tracking import register_import

    if fmt not in ("auto", *FORMATS):
        raise ConfigError(f"--format {fmt!r}: unknown; expected auto or one of {', '.join(FORMATS)}")

    cfg = _load(config, sets)
    if cfg.tracking.uri is None:
        raise ConfigError("tracking.uri: tracking is disabled (null); an import registers a version")
    imported = read_foreign(file, fmt, arch=arch, stride=stride, trust=trust_pickle)
    model = name or f"{imported.format}-{imported.contract.arch}"
    version = register_import(cfg, imported, file, model)
    typer.echo(f"models:/{model}/{version}  ({imported.contract.describe()}, "
               f"protocol {imported.contract.protocol}; {imported.dropped} non-encoder tensors left out)")
