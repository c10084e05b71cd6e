"""Decoding one video: probe, pick frames, read only those, resize + crop on uint8 frames.

Torch-free on purpose: this runs in the decoder subprocesses (see `extract.decoder`), where a
crash of the C decoders on a damaged file must not take the extraction process with it.

The geometric part of the backbone's preprocessing (resize, centre crop) happens here with PIL,
exactly as timm's eval transform does it on a PIL image; the float part (to [0, 1], normalise)
happens next to the model. Together they equal `timm.data.create_transform(**data_config)`.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from extract.sampling import select

PIL_INTERP = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
    "box": Image.BOX, "hamming": Image.HAMMING, "lanczos": Image.LANCZOS,
}
CHUNK_BYTES = 64 << 20  # decoded full-size frames held at once per decoder
MAX_CHUNK = 32
# decord's frame count is trusted if it is at least this share of what the container declares
COUNT_TOLERANCE = 0.9


class DecodeError(Exception):
    """A video that cannot be decoded; str(e) is the reason recorded in failures.jsonl."""


# ---------------------------------------------------------------------------------------------
# geometry: resize + crop, the uint8 half of timm's eval transform


def geometry(data_config: dict) -> dict:
    """A plain dict describing resize + crop for `data_config` (timm's resolve_data_config output)."""
    _, h, w = data_config["input_size"]
    crop_pct = data_config.get("crop_pct") or 0.875
    mode = data_config.get("crop_mode") or "center"
    interp = data_config.get("interpolation", "bilinear")
    if interp in PIL_INTERP and not data_config.get("crop_border_pixels"):
        if mode == "center" and h == w:
            return {"mode": "short_side", "size": math.floor(h / crop_pct), "crop": (h, w), "interp": interp}
        if mode == "squash":
            size = (math.floor(h / crop_pct), math.floor(w / crop_pct))
            return {"mode": "squash", "size": size, "crop": (h, w), "interp": interp}
    # anything else: run timm's own PIL transforms (slower to start: imports timm in the decoder)
    return {"mode": "timm", "config": dict(data_config), "crop": (h, w), "interp": interp}


class Preprocessor:
    """uint8 RGB frame [H, W, 3] -> uint8 [crop_h, crop_w, 3], as timm's eval transform before ToTensor."""

    def __init__(self, geo: dict):
        self.geo = geo
        self.crop = tuple(geo["crop"])
        self._timm = None
        if geo["mode"] == "timm":
            import timm.data
            import torchvision.transforms as T

            tf = timm.data.create_transform(**geo["config"])
            stages = []
            for t in tf.transforms:
                if isinstance(t, T.Normalize) or "ToTensor" in type(t).__name__:
                    break
                stages.append(t)
            self._timm = T.Compose(stages)
        else:
            self._resample = PIL_INTERP[geo["interp"]]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        img = Image.fromarray(frame)
        if self._timm is not None:
            out = np.asarray(self._timm(img))
        else:
            w, h = img.size
            if self.geo["mode"] == "short_side":
                size = self.geo["size"]
                short, long = (w, h) if w <= h else (h, w)
                new_short, new_long = size, int(size * long / short)  # torchvision's rounding
                new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
            else:
                new_h, new_w = self.geo["size"]
            if (new_w, new_h) != (w, h):
                img = img.resize((new_w, new_h), self._resample)
            out = _center_crop(np.asarray(img), self.crop)
        if out.shape[:2] != self.crop:
            raise DecodeError(f"preprocessing gave {out.shape}, expected {self.crop}")
        return np.ascontiguousarray(out)


def _center_crop(a: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """torchvision's center_crop on an image array (zero padding when the crop is larger)."""
    ch, cw = crop
    h, w = a.shape[:2]
    if ch > h or cw > w:
        pt, pl = max(0, (ch - h) // 2), max(0, (cw - w) // 2)
        pb, pr = max(0, (ch - h + 1) // 2), max(0, (cw - w + 1) // 2)
        a = np.pad(a, ((pt, pb), (pl, pr), (0, 0)))
        h, w = a.shape[:2]
    top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)  # torchvision's rounding
    return a[top:top + ch, left:left + cw]


# ---------------------------------------------------------------------------------------------
# probing and decoding


@dataclass
class Probe:
    """What the container says about its video stream (PyAV, no decoding)."""

    frames: int  # declared frame count, 0 if unknown
    fps: float
    duration: float  # seconds, 0 if unknown
    codec: str
    width: int
    height: int

    @property
    def expected_frames(self) -> int:
        if self.frames > 0:
            return self.frames
        return round(self.duration * self.fps) if self.duration > 0 and self.fps > 0 else 0


def check_file(path: str) -> None:
    """Raise DecodeError for what is clearly not a readable file."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise DecodeError(f"cannot open {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError(f"{path} is a directory, not a video file")
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError(f"{path} is not a regular file")
    if st.st_size == 0:
        raise DecodeError(f"{path} is an empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise DecodeError(f"cannot read {path}: {e.strerror or e}") from None


def probe(path: str, src: str | None = None) -> Probe:
    import av

    try:
        with av.open(src or path) as c:
            if not c.streams.video:
                kinds = sorted({s.type for s in c.streams}) or ["no streams"]
                raise DecodeError(f"{path} has no video stream (found: {', '.join(kinds)})")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            fps = float(rate) if rate else 0.0
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            else:
                duration = float(c.duration) / 1e6 if c.duration else 0.0
            cc = s.codec_context
            return Probe(int(s.frames or 0), fps, duration, cc.name if cc else "?",
                         int(cc.width if cc else 0), int(cc.height if cc else 0))
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"{path} is not a readable video ({_short(e)})") from None


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:300]


def decode_video(path: str, policy: dict, geo: dict, *, fault_tol: float = 0.05,
                 backend: str = "auto", chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple]:
    """Decode the frames `policy` picks from `path`.

    Yields ("start", info) once, then ("frames", timestamps float32 [k], pixels uint8 [k, h, w, 3])
    chunks, then ("done", info). Raises DecodeError with a reason naming the file.
    Timestamps are seconds from the first frame.
    """
    check_file(path)
    src, fd = _openable(path)
    try:
        yield from _decode(path, src, policy, geo, fault_tol, backend, chunk_bytes)
    finally:
        if fd is not None:
            os.close(fd)


def _openable(path: str) -> tuple[str, int | None]:
    """A name the C libraries can open: names that are not UTF-8 go through /proc/self/fd."""
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:
        fd = os.open(os.fsencode(path), os.O_RDONLY)
        return f"/proc/self/fd/{fd}", fd


@dataclass
class _Job:
    """One video being decoded: what both backends need."""

    path: str  # as the user named it (in messages)
    src: str  # what the C libraries open (see _openable)
    probe: Probe
    policy: dict
    pre: Preprocessor
    chunk: int  # frames per yielded chunk
    notes: list[str] = field(default_factory=list)  # work-arounds, reported with the video


def _decode(path, src, policy, geo, fault_tol, backend, chunk_bytes):
    pr = probe(path, src)
    if pr.width * pr.height > 16384 * 16384:
        raise DecodeError(f"{path}: frame size {pr.width}x{pr.height} is too large to decode")
    frame_bytes = max(1, pr.width * pr.height * 3)
    job = _Job(path, src, pr, policy, Preprocessor(geo), max(1, min(MAX_CHUNK, chunk_bytes // frame_bytes)))
    if backend in ("auto", "decord"):
        try:
            yield from _decode_decord(job, fault_tol, strict=backend == "decord")
            return
        except _UsePyAV as e:
            job.notes.append(str(e))
    yield from _decode_pyav(job)


def timestamp_problem(pts: np.ndarray, fps: float, duration: float) -> str:
    """Why these frame times cannot be trusted, or '' (damaged files give missing or wild times)."""
    if not len(pts):
        return "no frames"
    if not np.all(np.isfinite(pts)):
        return "non-finite times"
    span = float(pts.max() - pts.min())
    limit = max(duration, len(pts) / fps if fps > 0 else 0.0) * 1.5 + 1.0
    if pts.min() < -1.0 or span > limit:
        return f"times span {span:.3g} s for {len(pts)} frames"
    if len(pts) > 1 and np.any(np.diff(np.sort(pts)) <= 0):
        return "repeated times"
    return ""


class _UsePyAV(Exception):
    pass


def _decode_decord(job: _Job, fault_tol: float, strict: bool):
    import decord

    path, pr, pre, chunk, notes = job.path, job.probe, job.pre, job.chunk, job.notes

    decord.logging.set_level(decord.logging.QUIET)
    try:
        vr = decord.VideoReader(job.src, ctx=decord.cpu(0), num_threads=1, fault_tol=fault_tol)
        n = len(vr)
    except Exception as e:
        if strict:
            raise DecodeError(f"{path}: decord cannot open it ({_short(e)})") from None
        raise _UsePyAV(f"decord could not open it ({_short(e)}); decoded with PyAV") from None
    expected = pr.expected_frames
    if n == 0 or (expected and n < COUNT_TOLERANCE * expected - 1):
        msg = f"decord reports {n} frames, the container ~{expected}"
        if strict:
            raise DecodeError(f"{path}: {msg}")
        raise _UsePyAV(f"{msg}; decoded with PyAV")
    pts = vr.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
    fps = pr.fps or float(vr.get_avg_fps() or 0) or 25.0
    problem = timestamp_problem(pts, fps, pr.duration)
    if problem:
        notes.append(f"decord's frame times are unusable ({problem}); using frame index / {fps:g} fps")
        pts = np.arange(n, dtype=np.float64) / fps
    idx = select(pts, job.policy)
    t0 = float(pts.min())
    yield ("start", {"backend": "decord", "frames": len(idx), "total_frames": n, "fps": pr.fps,
                     "notes": notes})
    for a in range(0, len(idx), chunk):
        part = idx[a:a + chunk]
        try:
            raw = vr.get_batch(part.tolist()).asnumpy()
        except Exception as e:
            raise DecodeError(
                f"{path}: decoding frames {int(part[0])}-{int(part[-1])} of {n} failed ({_short(e)})"
            ) from None
        pix = np.stack([pre(f) for f in raw])
        del raw
        yield ("frames", (pts[part] - t0).astype(np.float32), pix)
    yield ("done", {"frames": len(idx)})


def _decode_pyav(job: _Job):
    """Fallback: demux once for the frame times, then decode sequentially keeping picked frames."""
    import av

    path, src, pr, pre, chunk, notes = job.path, job.src, job.probe, job.pre, job.chunk, job.notes

    try:
        with av.open(src) as c:
            s = c.streams.video[0]
            tb = float(s.time_base) if s.time_base else 0.0
            raw_pts = [p.pts if p.pts is not None else p.dts for p in c.demux(s) if p.size]
    except Exception as e:
        raise DecodeError(f"{path}: cannot demux the video stream ({_short(e)})") from None
    if not raw_pts:
        raise DecodeError(f"{path}: the video stream holds no frames")
    if any(p is None for p in raw_pts) or not tb:
        rate = pr.fps or 25.0
        ticks = np.arange(len(raw_pts), dtype=np.float64)
        pts = ticks / rate
        by_tick = False
    else:
        ticks = np.array(sorted(raw_pts), dtype=np.float64)
        pts = ticks * tb
        by_tick = True
    idx = select(pts, job.policy)
    keys = ticks[idx] if by_tick else idx
    want = {int(key): j for j, key in enumerate(keys)}
    t0 = float(pts.min())
    yield ("start", {"backend": "pyav", "frames": len(idx), "total_frames": len(pts), "fps": pr.fps,
                     "notes": notes})
    got_t, got_p, sent, k = [], [], 0, 0
    try:
        with av.open(src) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            s.thread_count = 1
            for frame in c.decode(s):
                key = (frame.pts if frame.pts is not None else frame.dts) if by_tick else k
                k += 1
                j = want.pop(int(key), None) if key is not None else None
                if j is None:
                    if not want:
                        break
                    continue
                got_t.append(pts[idx[j]] - t0)
                got_p.append(pre(frame.to_ndarray(format="rgb24")))
                if len(got_p) == chunk:
                    yield ("frames", np.asarray(got_t, np.float32), np.stack(got_p))
                    sent += len(got_p)
                    got_t, got_p = [], []
                if not want:
                    break
    except Exception as e:
        raise DecodeError(
            f"{path}: PyAV decoding failed after {sent + len(got_p)} frames ({_short(e)})"
        ) from None
    if got_p:
        yield ("frames", np.asarray(got_t, np.float32), np.stack(got_p))
        sent += len(got_p)
    if sent == 0:
        raise DecodeError(f"{path}: no frame could be decoded")
    if want:
        notes.append(f"{len(want)} of {len(idx)} picked frames could not be decoded")
    yield ("done", {"frames": sent, "notes": notes})
