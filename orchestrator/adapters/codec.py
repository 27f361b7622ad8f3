"""JSON codec for the domain's frozen dataclasses, driven by their type hints.

The store keeps each call's whole state as jsonb, so this must round-trip every state
exactly; a union member is tagged with its class name so the right dataclass comes back.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import types
import typing
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin

T = TypeVar("T")
_MICROSECOND = timedelta(microseconds=1)
_KIND = "kind"


def encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {_KIND: type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = encode(getattr(value, f.name))
        return out
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value // _MICROSECOND
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset):
        return sorted(encode(v) for v in value)
    if isinstance(value, tuple):
        return [encode(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(hint: Any, data: Any) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if data is None and type(None) in options:
            return None
        classes = [o for o in options if o is not type(None)]
        if len(classes) == 1:
            return decode(classes[0], data)
        # A union of dataclasses (a state, a command): pick by the recorded class name.
        for option in classes:
            if isinstance(data, dict) and getattr(option, "__name__", None) == data.get(_KIND):
                return decode(option, data)
        raise TypeError(f"no member of {hint} matches {data!r:.80}")
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v) for v in data)
        return tuple(decode(a, v) for a, v in zip(args, data, strict=True))
    if origin is frozenset:
        (item,) = get_args(hint)
        return frozenset(decode(item, v) for v in data)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            hints = _hints(hint)
            return hint(
                **{f.name: decode(hints[f.name], data[f.name]) for f in dataclasses.fields(hint)}
            )
        if issubclass(hint, enum.Enum):
            return hint(data)
        if hint is datetime:
            return datetime.fromisoformat(data)
        if hint is timedelta:
            return timedelta(microseconds=data)
        if hint is bytes:
            return base64.b64decode(data)
        if hint in (str, int, float, bool):
            return hint(data)
    raise TypeError(f"cannot decode {hint!r}")
