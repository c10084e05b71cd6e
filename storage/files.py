"""Small files written whole: a reader (or a crash) sees the old content or the new, never half."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = False) -> None:
    """`obj` as indented JSON at `path` (parents created), through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
    os.replace(tmp, path)
