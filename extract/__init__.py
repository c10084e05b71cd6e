"""Stage one: decode videos, sample frames, embed them with a frozen timm backbone, write the cache.

    from extract import ExtractConfig, run
    summary = run(ExtractConfig(fps=1, model="tf_efficientnet_lite0"), "videos/", "cache/")
    print(summary.line())

Imports `storage` only (never `temporal` or `pipeline`). torch is imported lazily (on first use of
`run` or `Summary`), so the decoder subprocesses and the CLI's start-up stay light.
"""

from extract.config import DEFAULT_MODEL, VIDEO_EXTENSIONS, ExtractConfig, ExtractError

__all__ = [
    "DEFAULT_MODEL", "VIDEO_EXTENSIONS", "ExtractConfig", "ExtractError", "Summary", "find_videos", "run",
]


def __getattr__(name: str):
    if name in ("Summary", "run"):
        from extract import engine

        return getattr(engine, name)
    if name == "find_videos":
        from extract.discover import find_videos

        return find_videos
    raise AttributeError(f"module 'extract' has no attribute {name!r}")
