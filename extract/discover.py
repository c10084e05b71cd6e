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
    """Every file under `videos_dir` (recursively) whose name ends in one of `extensions`, by id;
    or, if `videos_dir` is a text file, the videos it lists (`listed_videos`).

    Entries that only look like videos (a directory or a broken symlink named x.mp4) are listed
    too, so that they are reported as failures rather than silently ignored.
    """
    root = os.fspath(videos_dir)
    if os.path.isfile(root):
        if root.lower().endswith(extensions):
            raise ExtractError(f"--videos {root}: a video, not a folder or a list of videos; "
                               "pass its folder, or a text file naming it")
        return listed_videos(root)
    if not os.path.isdir(root):
        raise ExtractError(f"--videos {root}: neither a folder nor a list file")
    found: list[VideoFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if d.lower().endswith(extensions)]:
            if name.lower().endswith(extensions):
                path = os.path.join(dirpath, name)
                found.append(VideoFile(path, storage.video_id(path, root)))
    return sorted(found, key=lambda f: f.id)


def listed_videos(list_file: str | os.PathLike) -> list[VideoFile]:
    """The videos a text file names, one path per line (lines starting with '#' and blank lines
    are skipped), relative to the file's folder unless absolute, by id.

    The id is the path relative to the list's folder, as for a folder of videos; a video outside
    that folder gets its absolute path without the leading '/', so ids stay stable whatever else
    the list holds. Listed paths that do not exist are kept: the run reports them as failures.
    """
    base = Path(list_file).resolve().parent
    try:
        lines = Path(list_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ExtractError(f"--videos {list_file}: cannot read the list: {e}") from None
    found: dict[str, VideoFile] = {}
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):  # a whole-line comment: '#' may be in file names
            continue
        path = os.path.normpath(base / os.path.expanduser(entry))
        inside = os.path.commonpath([path, base]) == os.fspath(base)
        vid = storage.video_id(path, base if inside else "/")
        found.setdefault(vid, VideoFile(path, vid))
    if not found:
        raise ExtractError(f"--videos {list_file}: the list names no video")
    return sorted(found.values(), key=lambda f: f.id)


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
