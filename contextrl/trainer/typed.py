"""Dataclasses from plain mappings, type-checked: the machinery under the YAML run config.

`build_dataclass(cls, data)` instantiates a (nested) dataclass from a mapping: unknown keys
fail with "did you mean", every value is checked against its field's annotation (`bool`,
`int`, `float`, `str`, `Literal[...]`, `X | None`, `list[X]`, `dict[str, X]`, nested
dataclasses, `Any`) with light conversions (an int where a float is expected, a
comma-separated string where a list is), and every error is a `ConfigError` naming the
dotted field. `apply_dotted(data, ["a.b=1"], cls)` applies command-line overrides, values
read as YAML, keys checked against `cls` before anything is set.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Mapping, Sequence

import yaml

from contextrl.errors import ConfigError


def apply_dotted(data: Mapping[str, Any], overrides: Sequence[str], root: type) -> dict[str, Any]:
    """A copy of `data` with each `a.b.c=value` override set (value parsed as YAML); keys are
    checked against dataclass `root`'s fields ("did you mean")."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write it as section.field=value, e.g. trainer.ca_lambda=0.01")
        parts = key.split(".")
        _check_path(root, parts, key)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def build_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, checking keys and value types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'the config'}: expected a mapping of fields, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown field {_join(where, key)!r}{hint} (fields of {where or 'the config'}: {', '.join(names)})")
    kwargs = {key: _coerce(value, hints[key], _join(where, key)) for key, value in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` checked against type `tp` (and lightly converted); ConfigError naming `where` otherwise."""
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value if value is not None else {}, where)
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}={value!r}: expected {_describe(tp)}")
    if origin is Literal:
        if value not in args:
            close = _suggest(value, [str(a) for a in args])
            hint = f"; did you mean {close!r}?" if close else ""
            raise ConfigError(f"{where}={value!r} is not one of {list(args)}{hint}")
        return value
    if origin is list:
        if isinstance(value, str):  # `key=a,b` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r}: expected a list ({_describe(tp)})")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}={value!r}: expected a mapping ({_describe(tp)})")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}={value!r}: expected a string")
        return str(value)
    raise ConfigError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover - a bug in this module


def _suggest(value: Any, options: Sequence[str]) -> str | None:
    """The option closest to `value` (case-insensitive), or None."""
    lowered = {o.lower(): o for o in options}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1)
    return lowered[close[0]] if close else None


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"list of {_describe(args[0])}"
    if origin is dict:
        return f"mapping to {_describe(args[1])}"
    return {type(None): "null", bool: "true/false", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _check_path(root: type, parts: list[str], key: str) -> None:
    """Fail on an override key that names no field ("did you mean")."""
    cls: Any = root
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return  # inside a free-form mapping (e.g. miner.branch.*, trainer.extra.*)
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            close = difflib.get_close_matches(part, names, n=1)
            prefix = ".".join(parts[:i])
            full = f"{prefix}.{close[0]}" if prefix and close else (close[0] if close else "")
            raise ConfigError(f"override {key!r}: unknown field {'.'.join(parts[: i + 1])!r}"
                              + (f"; did you mean {full!r}?" if close else f" (fields: {', '.join(names)})"))
        cls = typing.get_type_hints(cls)[part]


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
