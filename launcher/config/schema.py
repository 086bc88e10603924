"""Typed loading of YAML into dataclasses: one place that checks types, ranges and unknown keys.

A field's constraints live in its dataclass metadata (`min`, `max`, `check`, `max_len`, `max_items`,
`multiline`), so each config class reads as its own schema. Every string, list and mapping is
bounded by default, because every value may reach a script, a terminal or a loop in the planner.
Errors name the file, the dotted key and the line, and quote values only through `shown`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from typing import Any, Literal, Union

from ..core.errors import UserError, did_you_mean
from .yamlfile import Located, control_problem, join_key, shown

_MISSING = dataclasses.MISSING
_LEADING_ZERO = re.compile(r"^[-+]?0\d")
MAX_LEN = 1024  # characters of a string field (each item of a list or mapping of strings)
MAX_ITEMS = 64  # entries of a list or mapping field


def field(default: Any = _MISSING, *, min: float | None = None, max: float | None = None,
          check: typing.Callable[[Any], str | None] | None = None, max_len: int = MAX_LEN,
          max_items: int = MAX_ITEMS, multiline: bool = False, doc: str = "") -> Any:
    """A dataclass field with validation metadata; mutable defaults are copied per instance.
    `multiline` allows newlines in its strings (free text that no script reads as a line)."""
    metadata = {"min": min, "max": max, "check": check, "max_len": max_len, "max_items": max_items,
                "multiline": multiline, "doc": doc}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(tp))
    if origin is Union:
        return " | ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _as_number(value: Any) -> Any:
    """YAML 1.1 reads `94e9` as a string; accept numeric strings where a number is expected, but not
    `029500`: YAML reads `0112` as octal, so a leading zero is refused rather than guessed at."""
    if isinstance(value, str) and _LEADING_ZERO.match(value.strip()):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _leading_zero_hint(value: Any) -> str | None:
    if isinstance(value, str) and _LEADING_ZERO.match(value.strip()):
        return "YAML 1.1 reads a leading zero as octal; drop it, or quote it if it is a string"
    return None


def convert(tp: Any, value: Any, key: str, src: Located) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, key, src)
            except UserError as exc:
                errors.append(exc)
        if len(errors) == 1:  # Optional[X]: X's own message and hint
            raise errors[0]
        raise src.error(key, f"expected {_type_name(tp)}, got {shown(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and not (isinstance(value, bool) and bool not in map(type, allowed)):
            return value
        hint = did_you_mean(value, [str(a) for a in allowed]) if isinstance(value, str) else None
        raise src.error(key, f"expected one of {', '.join(repr(a) for a in allowed)}, got {shown(value)}",
                        hint)
    if origin is list:
        if not isinstance(value, list):
            raise src.error(key, f"expected a list, got {type(value).__name__} {shown(value)}")
        (item_tp,) = typing.get_args(tp)
        return [convert(item_tp, item, join_key(key, i), src) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise src.error(key, f"expected a mapping, got {type(value).__name__} {shown(value)}")
        key_tp, value_tp = typing.get_args(tp)
        return {convert(key_tp, k, join_key(key, k), src): convert(value_tp, v, join_key(key, k), src)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, src, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise src.error(key, f"expected true or false, got {shown(value)}")
    if tp is int:
        number = _as_number(value)
        if isinstance(number, float) and number.is_integer():
            return int(number)
        if isinstance(number, int) and not isinstance(number, bool):
            return number
        raise src.error(key, f"expected an integer, got {shown(value)}", _leading_zero_hint(value))
    if tp is float:
        number = _as_number(value)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return float(number)
        raise src.error(key, f"expected a number, got {shown(value)}", _leading_zero_hint(value))
    if tp is str:
        if isinstance(value, str):
            return value
        raise src.error(key, f"expected a string, got {type(value).__name__} {shown(value)}")
    raise TypeError(f"unsupported schema type {tp!r}")


def build(cls: type, data: Any, src: Located, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key against the class's fields."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise src.error(prefix, f"expected a mapping, got {type(data).__name__} {shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise src.error(join_key(prefix, key), "unknown key", did_you_mean(key, fields))
    kwargs = {}
    for name, spec in fields.items():
        key = join_key(prefix, name)
        if name not in data:
            if spec.default is _MISSING and spec.default_factory is _MISSING:
                raise src.error(key, "required key is missing")
            continue
        _check_size(spec, hints[name], data[name], key, src)
        value = convert(hints[name], data[name], key, src)
        _check_range(spec, value, key, src)
        kwargs[name] = value
    return cls(**kwargs)


def _check_range(spec: dataclasses.Field, value: Any, key: str, src: Located) -> None:
    if value is None or isinstance(value, bool):
        return
    low, high, check = spec.metadata.get("min"), spec.metadata.get("max"), spec.metadata.get("check")
    if isinstance(value, float) and not math.isfinite(value):
        raise src.error(key, f"must be a finite number, got {value}")
    if isinstance(value, (int, float)):
        if low is not None and value < low:
            raise src.error(key, f"must be at least {low:g}, got {shown(value)}")
        if high is not None and value > high:
            raise src.error(key, f"must be at most {high:g}, got {shown(value)}")
    if check is not None:
        problem = check(value)
        if problem:
            raise src.error(key, problem)


def _check_size(spec: dataclasses.Field, tp: Any, value: Any, key: str, src: Located) -> None:
    """Before conversion: strings within max_len and free of control characters (newlines only
    where multiline), lists and mappings within max_items, at any depth of the field's type
    (a nested dataclass checks its own fields)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp, origin = (args[0], typing.get_origin(args[0])) if len(args) == 1 else (Any, None)
    if dataclasses.is_dataclass(tp):
        return
    max_len, max_items = spec.metadata.get("max_len", MAX_LEN), spec.metadata.get("max_items", MAX_ITEMS)
    if isinstance(value, str):
        if len(value) > max_len:
            raise src.error(key, f"is {len(value)} characters long; at most {max_len} are allowed")
        problem = control_problem(value, allow_newline=spec.metadata.get("multiline", False))
        if problem:
            raise src.error(key, f"the value {problem}")
    elif isinstance(value, (list, dict)):
        if len(value) > max_items:
            raise src.error(key, f"has {len(value)} entries; at most {max_items} are allowed")
        item_tp = typing.get_args(tp)[-1] if origin in (list, dict) else Any
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for index, item in items:
            _check_size(spec, item_tp, item, join_key(key, index), src)


def to_dict(obj: Any) -> Any:
    """Plain data of a config dataclass, for writing resolved inputs into the run directory."""
    return dataclasses.asdict(obj)
