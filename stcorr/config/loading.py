"""Typed configuration: one frozen pydantic model per section of ``pipeline_config.yaml``.

Every field says why its default is what it is. Unknown keys are rejected. Values come from, in
increasing priority: the field defaults, the YAML file, ``STCORR_<SECTION>__<KEY>=value``
environment variables, and ``--set section.key=value`` on the command line. Errors name the key
path and what was expected, e.g. ``finetune.lr: expected a positive float, got "fast"``.

The model classes live in :mod:`stcorr.config.sections` and :mod:`stcorr.config.objectives`; this
module loads, merges and validates.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stcorr.config.errors import ConfigError, describe_error
from stcorr.config.sections import PipelineConfig

ENV_PREFIX = "STCORR_"
# Environment variables with the prefix that are not config overrides.
_ENV_RESERVED = {"STCORR_CONFIG", "STCORR_HOME"}


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["shard.max_samples=500", "finetune.objective=crw"]`` into a nested dict.

    Values are parsed as YAML scalars, so ``500`` is an int, ``1e-4`` a float, ``null`` None and
    ``[a, b]`` a list. A key without ``=`` raises :class:`ConfigError`.
    """
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        _assign(nested, key.strip().split("."), _parse_scalar(raw))
    return nested


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Overrides from ``STCORR_SECTION__KEY=value`` variables (``__`` separates levels)."""
    environ = os.environ if environ is None else environ
    nested: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _ENV_RESERVED:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and path[0] != "profile":
            continue  # STCORR_SOMETHING without a section is not ours to judge
        _assign(nested, path, _parse_scalar(raw))
    return nested


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Load and validate the pipeline config.

    Args:
        path: YAML file; ``None`` uses only the defaults (the embedded local profile).
        overrides: ``section.key=value`` strings, applied last.
        profile: shortcut for ``--set profile=...``.
        environ: environment to read ``STCORR_*`` overrides from (default: ``os.environ``).

    Returns:
        The validated, frozen :class:`PipelineConfig`.

    Raises:
        ConfigError: a missing or unreadable file, bad YAML, an unknown key or a bad value; the
            message names the key path and what was expected.
    """
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    env = env_overrides(environ)
    cli = parse_overrides(overrides)
    if profile is not None:
        cli["profile"] = profile
    profiles = data.pop("profiles", None)
    name = cli.get("profile", env.get("profile", data.get("profile", "local")))
    # Precedence: defaults < YAML < the chosen profile's block < environment < --set / --profile.
    data = _deep_merge(data, _profile_block(profiles, name))
    data = _deep_merge(_deep_merge(data, env), cli)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(describe_error(first, PipelineConfig)) from None


def fingerprint(*parts: Any) -> str:
    """sha256 over a canonical JSON rendering of ``parts`` (pydantic models are dumped first)."""

    def _plain(obj: Any) -> Any:
        if hasattr(obj, "model_dump"):
            return obj.model_dump(mode="json")
        return obj

    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _profile_block(profiles: Any, name: Any) -> dict[str, Any]:
    """The ``profiles.<name>`` block of the YAML, else the built-in one, else {}."""
    from stcorr.config.profiles import BUILTIN

    if profiles is None:
        profiles = {}
    if not isinstance(profiles, dict):
        raise ConfigError("profiles: expected a mapping of profile name to config sections")
    block = profiles.get(name, BUILTIN.get(str(name), {}))
    if not isinstance(block, dict):
        raise ConfigError(f"profiles.{name}: expected a mapping of config sections")
    return block


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (expected a YAML file)")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return loaded


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string; users mean a number
        except ValueError:
            return value
    return value


def _assign(nested: dict[str, Any], path: list[str], value: Any) -> None:
    node = nested
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is a value, not a section")
        node = child
    node[path[-1]] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
