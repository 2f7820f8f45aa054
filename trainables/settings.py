"""Typed, validated settings built from plain dicts.

Every configurable part (the shared training settings and each regime's own
settings) is a frozen dataclass whose fields carry their help text and their
valid range in `metadata`. One generic builder turns a plain dict (from a CLI,
a YAML file or a Ray Tune config) into such a dataclass, so that an unknown key
or an out-of-range value always fails the same way: a `ValueError` naming the key.
No float setting accepts nan or +-inf, whatever its own check says: a
non-finite value is never a meaningful rate, factor or length, and inf passes
every lower bound (`lr > 0`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    check: Callable[[Any], bool] | None = None,
    rule: str = "",
) -> Any:
    """A dataclass field with help text and validation rules.

    `check` is a predicate on the (type-coerced) value; `rule` says in words
    what it demands, for the error message.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or None for container defaults")
    return dataclasses.field(
        default=default,
        metadata={"help": help, "choices": choices, "check": check, "rule": rule},
    )


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Coerce YAML/CLI/Tune values to the field's declared type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or str(value).strip().lower() in ("none", "null")):
            return None  # "None" is how MLflow params and the CLI spell an unset optional
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"setting '{name}' must be a list, got {value!r}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    try:
        value = _scalar(value, annotation)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"setting '{name}' must be of type {annotation.__name__}, got {value!r}"
        ) from None
    if annotation is float and not math.isfinite(value):
        raise ValueError(f"setting '{name}' must be a finite number, got {value!r}")
    return value


def _scalar(value: Any, annotation: Any) -> Any:
    """`value` as a bool, int, float or str; TypeError, ValueError or OverflowError if it is not one."""
    if annotation is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise ValueError
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value)  # exact, even beyond a float's 53 bits (seeds)
        as_float = float(value)
        if not as_float.is_integer():
            raise ValueError
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if annotation is str and not isinstance(value, str):
        raise ValueError
    return value


def build_settings(cls: type[T], values: Mapping[str, Any], *, owner: str) -> T:
    """Build dataclass `cls` from `values`, rejecting unknown keys and bad values.

    `owner` names what the settings belong to (e.g. "regime 'lerac'") in errors.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ValueError(
            f"unknown setting '{unknown[0]}' for {owner}; known settings: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    coerced = {}
    for name, value in values.items():
        field = fields[name]
        value = _coerce(name, value, hints[name])
        choices = field.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(
                f"setting '{name}' must be one of {', '.join(map(str, choices))}; got {value!r}"
            )
        check = field.metadata.get("check")
        if check is not None and value is not None and not check(value):
            rule = field.metadata.get("rule") or "a valid value"
            raise ValueError(f"setting '{name}' must be {rule}; got {value!r}")
        coerced[name] = value
    return cls(**coerced)


def settings_dict(instance: Any) -> dict[str, Any]:
    """Plain dict of a settings dataclass (tuples as lists, for YAML and MLflow)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(instance).items()
    }
