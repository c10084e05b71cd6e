"""`--videos LIST.txt`: the videos a text file names (comments, relative paths, one outside)."""

from __future__ import annotations

import pytest

import storage
from extract import ExtractError, find_videos, run
from tests.testing import tiny


def test_list_file_names_the_videos(tmp_path, make_video, one_thread):
    for name in ("lists/clips/a.mp4", "lists/clips/b.mp4", "lists/not listed.mp4", "elsewhere/c #1.mp4"):
        make_video(name, frames=12, fps=6)
    listing = tmp_path / "lists" / "videos.txt"
    listing.write_text(
        "# the clips of the first batch\n"
        "clips/a.mp4\n"
        "\n"
        "   clips/b.mp4   \n"
        "clips/a.mp4\n"  # twice: once in the cache
        f"{tmp_path / 'elsewhere' / 'c #1.mp4'}\n"  # absolute, outside the list's folder
        "clips/missing.mp4\n"
    )
    found = find_videos(listing, (".mp4",))
    outside = str(tmp_path / "elsewhere" / "c #1.mp4").lstrip("/")
    assert [v.id for v in found] == sorted(["clips/a.mp4", "clips/b.mp4", "clips/missing.mp4", outside])
    summary = run(tiny(fps=2), listing, tmp_path / "cache")
    cache = storage.open_cache(tmp_path / "cache")
    assert cache.video_ids == sorted(["clips/a.mp4", "clips/b.mp4", outside])
    assert list(summary.failures) == ["clips/missing.mp4"]  # reported, not silently skipped
    assert all(cache.num_frames(v) == 4 for v in cache.video_ids)  # 2 s at 2 fps


def test_list_file_errors(tmp_path, make_video):
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    with pytest.raises(ExtractError, match="names no video"):
        find_videos(tmp_path / "empty.txt", (".mp4",))
    video = make_video("v.mp4", frames=3)
    with pytest.raises(ExtractError, match="a video, not a folder or a list"):
        find_videos(video, (".mp4",))
    with pytest.raises(ExtractError, match="neither a folder nor a list file"):
        find_videos(tmp_path / "absent", (".mp4",))
