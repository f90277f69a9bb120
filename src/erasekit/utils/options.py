"""Settings from the command line and from files: ``KEY=VALUE`` pairs (``erase --set``, ``attack --budget``) and
JSON / TOML config files, typed by a config dataclass's fields and written back as the same JSON. Every problem is a
one-line UserError naming the key."""

from __future__ import annotations

import json
import tomllib
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from erasekit.errors import UserError
from erasekit.utils.inputs import read_text

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` as ``{"a": "1", "b": "x"}``; a later key wins, as on a command line."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE")
        values[key.strip()] = value.strip()
    return values


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON (``.json``) or TOML (any other name) file holding one table of settings, or an edit artifact's
    ``manifest.json`` (its ``config``: the settings that edit was made with)."""
    text = read_text(path, "config file")
    try:
        data = json.loads(text) if Path(path).suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise UserError(
            f"{path}: not a valid {'JSON' if Path(path).suffix == '.json' else 'TOML'} file ({exc})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "method" in data:
        data = data["config"]  # an edit artifact's manifest.json: the settings it was made with
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table of settings, got {type(data).__name__}")
    return data


def _convert(value: Any, kind: Any, key: str) -> Any:
    """``value`` (a string from the command line, or a JSON / TOML value) as the field type ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        return _convert(value, next(a for a in args if a is not type(None)), key)
    if origin is tuple:
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError(value)
        item_kind = args[0] if args else str
        return tuple(_convert(v, item_kind, key) for v in items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in TRUE + FALSE:
            return value.lower() in TRUE
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(value)
        return int(value) if isinstance(value, int) else int(value.strip(), 10)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    raise ValueError(value)


def typed_settings(config_class: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    """``values`` converted to the types of ``config_class``'s fields; an unknown key or a value of the wrong type
    is a one-line UserError that names the key and its type. Ranges are the config's own check."""
    hints = typing.get_type_hints(config_class)
    known = {f.name for f in fields(config_class) if f.init}
    typed = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{what} has no setting {key!r}; its settings: {', '.join(sorted(known))}")
        try:
            typed[key] = _convert(value, hints[key], key)
        except (ValueError, TypeError, OverflowError, StopIteration):
            kind = getattr(hints[key], "__name__", str(hints[key]))
            raise UserError(f"{what} setting {key}={value!r}: expected {kind}") from None
    return typed
