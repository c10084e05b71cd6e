"""One loader for `params.yaml`: each stage reads its section into its own config dataclass."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def build(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """`cls(**values)`, refusing keys the dataclass does not have (with a did-you-mean)."""
    values = dict(values or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, fields, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{where}: unknown key(s) {', '.join(hints)}; known: {', '.join(sorted(fields))}")
    return cls(**values)


def section(params: dict[str, Any], name: str, cls: type[T]) -> T:
    return build(cls, params.get(name), f"params.yaml [{name}]")
