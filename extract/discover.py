"""Which videos a run extracts, and into which shard each one goes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import storage
from extract.config import ExtractConfig, ExtractError


@dataclass(frozen=True)
class VideoFile:
    path: str
    id: str


def find_videos(videos_dir: str | os.PathLike, extensions: tuple[str, ...]) -> list[VideoFile]:
    """Every file under `videos_dir` (recursively) whose name ends in one of `extensions`, by id.

    Entries that only look like videos (a directory or a broken symlink named x.mp4) are listed
    too, so that they are reported as failures rather than silently ignored.
    """
    root = os.fspath(videos_dir)
    if not os.path.isdir(root):
        raise ExtractError(f"--videos {root}: not a directory")
    found: list[VideoFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if d.lower().endswith(extensions)]:
            if name.lower().endswith(extensions):
                path = os.path.join(dirpath, name)
                found.append(VideoFile(path, storage.video_id(path, root)))
    return sorted(found, key=lambda f: f.id)


def groups_of(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass
class Plan:
    """The work of one run: the videos not yet cached, by id, `videos_per_shard` at a time."""

    cfg: ExtractConfig
    groups: list[list[VideoFile]]
    shards: list[Path]  # groups[g] goes to shards[g]: fresh names from CacheWriter.allocate_shard

    @property
    def videos(self) -> list[VideoFile]:
        return [v for g in self.groups for v in g]
