"""Typed loading of YAML into dataclasses: one place that checks types, ranges and unknown keys.

A field's constraints live in its dataclass metadata (`min`, `max`, `check`), so each config class
reads as its own schema. Errors name the file, the dotted key and the line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from typing import Any, Literal, Union

from .errors import UserError
from .yamlfile import Located, join_key

_MISSING = dataclasses.MISSING


def field(default: Any = _MISSING, *, min: float | None = None, max: float | None = None,
          check: typing.Callable[[Any], str | None] | None = None, doc: str = "") -> Any:
    """A dataclass field with validation metadata; mutable defaults are copied per instance."""
    metadata = {"min": min, "max": max, "check": check, "doc": doc}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


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
    """YAML 1.1 reads `94e9` as a string; accept numeric strings where a number is expected."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


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
        raise src.error(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and not (isinstance(value, bool) and bool not in map(type, allowed)):
            return value
        hint = did_you_mean(value, [str(a) for a in allowed]) if isinstance(value, str) else None
        raise src.error(key, f"expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}",
                        hint)
    if origin is list:
        if not isinstance(value, list):
            raise src.error(key, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [convert(item_tp, item, join_key(key, i), src) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise src.error(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {convert(key_tp, k, join_key(key, k), src): convert(value_tp, v, join_key(key, k), src)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, src, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise src.error(key, f"expected true or false, got {value!r}")
    if tp is int:
        number = _as_number(value)
        if isinstance(number, float) and number.is_integer():
            return int(number)
        if isinstance(number, int) and not isinstance(number, bool):
            return number
        raise src.error(key, f"expected an integer, got {value!r}")
    if tp is float:
        number = _as_number(value)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return float(number)
        raise src.error(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise src.error(key, f"expected a string, got {type(value).__name__} {value!r}")
    raise TypeError(f"unsupported schema type {tp!r}")


def build(cls: type, data: Any, src: Located, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key against the class's fields."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise src.error(prefix, f"expected a mapping, got {type(data).__name__} {data!r}")
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
            raise src.error(key, f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise src.error(key, f"must be at most {high}, got {value}")
    if check is not None:
        problem = check(value)
        if problem:
            raise src.error(key, problem)


def to_dict(obj: Any) -> Any:
    """Plain data of a config dataclass, for writing resolved inputs into the run directory."""
    return dataclasses.asdict(obj)
