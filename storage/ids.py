"""Video ids: the path relative to the videos root, as portable, safe UTF-8 text."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def video_id(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The id of the video at `path` under `root`: its relative POSIX path.

    File names that are not valid UTF-8 keep their bytes as `\\xNN` escapes, so the id is
    always storable text and the same file always gets the same id.
    """
    rel = os.path.relpath(os.fspath(path), os.fspath(root))
    text = PurePosixPath(*Path(rel).parts).as_posix()
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_video_id(vid: str) -> str:
    """Return `vid` if it is a safe relative id; raise ValueError otherwise."""
    if not isinstance(vid, str) or not vid:
        raise ValueError(f"video id must be a non-empty string, got {vid!r}")
    p = PurePosixPath(vid)
    if p.is_absolute() or ".." in p.parts or "\x00" in vid or vid.startswith("\\"):
        raise ValueError(f"video id {vid!r} escapes the videos root (absolute or '..')")
    return vid
