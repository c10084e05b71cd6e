"""Write synthetic videos with PyAV: the demo dataset (pipeline/demo.py) and the tests make their own.

By default the encode is byte-reproducible, or the demo's videos, features and metrics would drift:
libx264 at a constant quantiser on one thread. With rate control (`crf`) its macroblock-tree
lookahead makes slightly different decisions from run to run, and its default thread count follows
the machine's cores, which changes the output too. The same frames then give the same bytes for the
same PyAV build (its bundled FFmpeg/x264 is part of the bitstream).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25,
                codec: str = "libx264", gop: int = 12, qp: int = 20, crf: int | None = None) -> int:
    """Encode RGB uint8 frames [H, W, 3] (H, W even) to `path`; returns the frame count.

    libx264 encodes at constant quantiser `qp` (reproducible), or with rate control at `crf` (not)."""
    n = 0
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.gop_size = gop
                stream.codec_context.thread_count = 1
                if codec == "libx264":
                    quality = {"qp": str(qp)} if crf is None else {"crf": str(crf)}
                    stream.options = {**quality, "preset": "veryfast"}
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
            vf.pts, vf.time_base = n, 1 / rate
            container.mux(stream.encode(vf))
            n += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return n
