"""Stage one: decode videos, sample frames, embed them with a frozen timm backbone, write the cache.

    from extract import ExtractConfig, run
    summary = run(ExtractConfig(fps=1, model="tf_efficientnet_lite0"), "videos/", "cache/")
    print(summary.line())

Imports `storage` only (never `temporal` or `pipeline`).
"""

from extract.config import DEFAULT_MODEL, VIDEO_EXTENSIONS, ExtractConfig, ExtractError
from extract.engine import Summary, find_videos, run

__all__ = [
    "DEFAULT_MODEL", "VIDEO_EXTENSIONS", "ExtractConfig", "ExtractError", "Summary", "find_videos", "run",
]
