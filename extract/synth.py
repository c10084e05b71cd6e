"""Write synthetic videos with PyAV: the demo dataset (pipeline/demo.py) and the tests make their own."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25,
                codec: str = "libx264", gop: int = 12, crf: int = 18) -> int:
    """Encode RGB uint8 frames [H, W, 3] (H, W even) to `path`; returns the frame count."""
    n = 0
    with av.open(os.fspath(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.gop_size = gop
                if codec == "libx264":
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(vf))
            n += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return n
