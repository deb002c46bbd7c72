"""Config dataclasses back from their JSON (`asdict`) form: the one reader of every run config (teacher, training,
student)."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from `asdict` output (lists back to tuples where the default is a
    tuple); unknown keys are an error, missing ones take their defaults."""
    names = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        default = getattr(defaults, name)
        if is_dataclass(default):
            kwargs[name] = config_from_dict(type(default), value)
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
