"""Config errors as one readable line: the key path, what was expected, what was given."""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo


class ConfigError(ValueError):
    """A config problem; the message is one line naming the key path (CLI exit code 2)."""


def describe_error(err: Mapping[str, Any], root: type[BaseModel]) -> str:
    """Render one pydantic error dict as ``path: expected X, got Y``."""
    loc = [str(p) for p in err.get("loc", ())]
    index = [p for p in loc if p.isdigit()]  # position inside a list/tuple value
    keys = [p for p in loc if not p.isdigit()]
    path = ".".join(keys) + "".join(f"[{i}]" for i in index)
    owner, field = _field_at(root, keys)
    kind = err.get("type")
    if kind == "extra_forbidden":
        known = sorted(owner.model_fields) if owner is not None else []
        hint = f"; known keys here: {', '.join(known)}" if known else ""
        return f"{path}: unknown key{hint}"
    if kind == "value_error":
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return msg if not loc else f"{path}: {msg}"
    if field is None:
        return f"{path}: {err.get('msg', 'invalid value')}"
    if kind == "missing" or (index and kind in ("too_short", "too_long")):
        return f"{'.'.join(keys)}: expected {_expected(field)}"
    expected = _element(field.annotation) if index else _expected(field)
    return f"{path}: expected {expected}, got {_render(err.get('input'))}"


def _element(annotation: Any) -> str:
    """Description of one element of a list/tuple annotation (unwrapping Optional)."""
    for arg in get_args(annotation):
        if get_origin(arg) in (list, tuple):
            annotation = arg
    args = [a for a in get_args(annotation) if a is not Ellipsis]
    return _describe(args[0], []) if args else "a valid value"


def _field_at(root: type[BaseModel], loc: list[str]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Follow ``loc`` through nested models; return (owning model, field) of the deepest field."""
    model: type[BaseModel] | None = root
    field: FieldInfo | None = None
    for i, part in enumerate(loc):
        if model is None:
            break  # inside a list or tuple: report against the enclosing field
        if part not in model.model_fields:
            return (model if i == len(loc) - 1 else None), None
        field = model.model_fields[part]
        model = _model_of(field.annotation) if i < len(loc) - 1 else model
    return model, field


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _expected(field: FieldInfo) -> str:
    return _describe(field.annotation, list(field.metadata))


def _describe(annotation: Any, metadata: list[Any]) -> str:
    """'a positive float', 'an integer (>= 1) or null', "one of 'stt', 'crw'", ..."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        for item in extra:
            metadata = metadata + list(getattr(item, "metadata", [item]))
        return _describe(inner, metadata)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        members = get_args(annotation)
        parts = [_describe(a, metadata) for a in members if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in members else "")
    if origin in (list, tuple):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        item = _describe(items[0], []) if items else "value"
        count = f"{len(items)} " if origin is tuple and Ellipsis not in get_args(annotation) else ""
        return f"a list of {count}{_plural(item)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of settings"
    return _with_bounds(_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation))), metadata)


_NAMES = {float: "float", int: "integer", bool: "boolean (true/false)", str: "string"}


def _with_bounds(base: str, metadata: list[Any]) -> str:
    upper = any(isinstance(m, (at.Lt, at.Le)) for m in metadata)
    if any(isinstance(m, at.Gt) and m.gt == 0 for m in metadata):
        return f"a positive {base}"
    if any(isinstance(m, at.Ge) and m.ge == 0 for m in metadata) and not upper:
        return f"a non-negative {base}"
    bounds = [
        f"{sym} {getattr(m, attr)}"
        for m in metadata
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if getattr(m, attr, None) is not None
    ]
    article = "an" if base[0] in "aeiou" else "a"
    return f"{article} {base}" + (f" ({' and '.join(bounds)})" if bounds else "")


def _plural(item: str) -> str:
    for article in ("a ", "an "):
        if item.startswith(article):
            return item[len(article) :] + "s"
    return item


def _render(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def describe_type(field: FieldInfo) -> str:
    """Human description of a field's type and bounds (used by the config reference)."""
    return _expected(field)
