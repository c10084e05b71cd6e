"""Settings dataclasses from plain mappings (params.yaml sections, CLI flags, saved runs).

Shared by every stage's config class: unknown keys are refused with a did-you-mean, and field
types are read from the annotations (`int | None` included), not from their spelling.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any


def check_keys(cls: type, values: Mapping[str, Any], what: str, error: type[Exception] = ValueError) -> None:
    """Raise `error` naming every key of `values` that is not a field of the dataclass `cls`.

    `what` names the keys in the message, e.g. "temporal option(s)": "unknown temporal option(s):
    'fusoin' (did you mean 'fusion'?); known: ...".
    """
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), known, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise error(f"unknown {what}: {', '.join(hints)}; known: {', '.join(known)}")


def field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Each field of the dataclass `cls` -> the types its value may have: `int | None` -> (int, NoneType).

    Generic annotations count as their origin (`dict[str, int]` -> dict, `tuple[str, ...]` -> tuple).
    """
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        args = typing.get_args(t) if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union \
            else (t,)
        out[f.name] = tuple(typing.get_origin(a) or a for a in args)
    return out
