"""The model loop: decoded frames -> fixed-size batches across video boundaries -> backbone -> ShardSink."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from extract.backbone import Backbone
from extract.config import ExtractConfig
from extract.decoder import DecoderPool, Done, Failed, Frames
from extract.discover import VideoFile
from extract.sink import ShardSink

DECODER_NICE = 5  # decoders yield the CPU to the model; they get it whenever the model waits


class _VideoState:
    __slots__ = ("expected", "feats", "inferred", "ts")

    def __init__(self) -> None:
        self.feats: list[np.ndarray] = []  # in the storage dtype as they come, not float32 until the end
        self.ts: list[np.ndarray] = []
        self.inferred = 0
        self.expected: int | None = None


class Extractor:
    """Runs decoded frames through the backbone in fixed-size batches across video boundaries."""

    def __init__(self, backbone: Backbone, cfg: ExtractConfig):
        self.bb, self.cfg = backbone, cfg
        self.frames = 0
        self.infer_seconds = 0.0  # in the model (the rest of the main loop's time is waiting/copying)
        self.notes: dict[int, list[str]] = {}  # video index -> what the decoder worked around

    def process(self, videos: list[VideoFile], sink: ShardSink,
                on_video: Callable[[int], None] | None = None, procs: list | None = None) -> None:
        """Extract `videos` (indices = positions in the list) into `sink`."""
        cfg, bb = self.cfg, self.bb
        h, w = bb.input_size
        B = cfg.batch_size
        buf = torch.empty((B, h, w, 3), dtype=torch.uint8)
        if bb.device.type == "cuda":
            buf = buf.pin_memory()
        owners = np.full(B, -1, dtype=np.int64)
        fill = 0
        state: dict[int, _VideoState] = {}

        def finish(i: int) -> None:
            st = state.get(i)
            if st is None or st.expected is None or st.inferred < st.expected:
                return
            del state[i]
            if st.expected == 0:
                sink.video_failed(i, f"{videos[i].path}: no frame could be decoded")
            else:
                feats = np.concatenate(st.feats)
                ts = np.concatenate(st.ts).astype(np.float32)
                self.frames += len(feats)
                sink.video_done(i, feats, ts)
            if on_video is not None:
                on_video(i)

        def infer() -> None:
            nonlocal fill
            if fill == 0:
                return
            # always a full batch (stale rows past `fill` are ignored): the same shapes every time,
            # so a frame's features do not depend on its neighbours or on where a run was resumed
            t = time.perf_counter()
            y = bb.embed(buf)
            self.infer_seconds += time.perf_counter() - t
            touched = []
            r = 0
            while r < fill:
                i = int(owners[r])
                e = r
                while e < fill and owners[e] == i:
                    e += 1
                st = state.get(i)
                if st is not None:
                    st.feats.append(y[r:e].numpy().astype(cfg.dtype))  # a copy, in the storage dtype
                    st.inferred += e - r
                    touched.append(i)
                r = e
            fill = 0
            for i in touched:
                finish(i)

        pool = DecoderPool([(i, v.path) for i, v in enumerate(videos)], policy=cfg.sampling(),
                           geometry=bb.geometry, decoders=decoder_count(cfg, bb.device),
                           fault_tol=cfg.fault_tol, timeout=cfg.decode_timeout, nice=DECODER_NICE,
                           procs=procs)
        try:
            for ev in pool:
                if isinstance(ev, Frames):
                    st = state.setdefault(ev.index, _VideoState())
                    pix = torch.from_numpy(ev.pixels)
                    st.ts.append(ev.timestamps)
                    k, n = 0, len(pix)
                    while k < n:
                        take = min(B - fill, n - k)
                        buf[fill:fill + take] = pix[k:k + take]
                        owners[fill:fill + take] = ev.index
                        fill += take
                        k += take
                        if fill == B:
                            infer()
                elif isinstance(ev, Done):
                    st = state.setdefault(ev.index, _VideoState())
                    st.expected = ev.frames
                    if ev.info.get("notes"):
                        self.notes[ev.index] = list(dict.fromkeys(ev.info["notes"]))
                    finish(ev.index)
                elif isinstance(ev, Failed):
                    if ev.index < 0:
                        raise RuntimeError(ev.reason)
                    state.pop(ev.index, None)
                    sink.video_failed(ev.index, ev.reason)
                    if on_video is not None:
                        on_video(ev.index)
            infer()
            if state:  # cannot happen unless a decoder lied about its frame count
                for i in list(state):
                    state.pop(i)
                    sink.video_failed(i, f"{videos[i].path}: decoder sent fewer frames than announced")
        except BaseException:
            pool.close()
            sink.abort()
            raise


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def decoder_count(cfg: ExtractConfig, device: torch.device) -> int:
    """`cfg.decoders`, or for 0: one beside a CPU model (one decoder reads ~300 sampled frames/s at
    1 frame/s, the model 20-100), one per remaining core beside a GPU."""
    if cfg.decoders:
        return cfg.decoders
    return max(1, usable_cores() - 1) if device.type == "cuda" else 1


def set_threads(cfg: ExtractConfig, share: int = 1) -> None:
    """torch threads for the model: `cfg.threads`, or the usable cores split among `share` processes."""
    n = cfg.threads or max(1, usable_cores() // max(1, share))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
