"""Small files written whole: a reader (or a crash) sees the old content or the new, never half."""

from __future__ import annotations

import json
import os
from typing import Any

from storage import durable
from storage.location import as_path


def write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = False) -> None:
    """`obj` as indented JSON at `path` (parents created), replaced whole and fsynced (storage.durable)."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.atomic_write(path, (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode())
