"""`ExtractConfig`: every setting of stage one, with plain names (the `extract:` section of params.yaml)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from storage.device import is_device_name
from storage.settings import check_keys

DEFAULT_MODEL = "vit_base_patch16_clip_224.openai"
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts",
    ".m2ts", ".3gp", ".ogv", ".vob", ".mxf", ".asf", ".divx", ".f4v",
)


class ExtractError(RuntimeError):
    """A run that cannot start as configured; the message says why and what to do instead."""


@dataclass
class ExtractConfig:
    """Settings of one extraction run.

    Sampling: `num_frames` (N frames spread uniformly) if set, else `every` (every N-th frame) if
    set, else `fps` (frames nearest to 0, 1/fps, 2/fps, ... seconds). `max_frames` then caps the
    picked frames by keeping that many spread uniformly over them (the whole video stays covered).
    """

    # sampling
    fps: float | None = 1.0
    every: int | None = None
    num_frames: int | None = None
    max_frames: int | None = None
    # backbone
    model: str = DEFAULT_MODEL
    model_kwargs: dict = field(default_factory=dict)  # passed to timm.create_model, e.g. {"img_size": 64}
    weights: str | None = None  # local safetensors / torch state dict; overrides `pretrained`
    pretrained: bool = True  # False: random init seeded by `seed` (offline, for tests)
    seed: int = 0
    # throughput
    batch_size: int = 32
    device: str = "auto"  # auto | cpu | cuda | cuda:N (storage.device.pick_device)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast); auto: what the device runs natively
    compile: bool = False  # torch.compile the backbone (pays off on long runs only; see docs/extract.md)
    threads: int = 0  # torch intra-op threads per extraction process; 0 = the cores it may use
    decoders: int = 0  # decoder subprocesses per extraction process; 0: 1 on the CPU, cores - 1 with a GPU
    # cache
    dtype: str = "float16"
    format: str = "zarr"  # zarr | hdf5
    videos_per_shard: int = 32
    # distribution
    workers: int = 0  # >0: a local dask.distributed cluster of that many worker processes
    scheduler: str | None = None  # address of an existing dask.distributed scheduler
    # robustness
    decode_timeout: float = 600.0  # seconds without progress before a decoder is killed
    fault_tol: float = 0.05  # decord's damaged-frame limit: fraction (<1) or count (>=1); <0 = off
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    progress: bool = True

    def __post_init__(self) -> None:
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in self.extensions)
        self.model_kwargs = dict(self.model_kwargs or {})
        self.validate()

    def validate(self) -> None:
        def positive(name: str, integer: bool = True) -> None:
            v = getattr(self, name)
            if v is None:
                return
            if (integer and (isinstance(v, bool) or not isinstance(v, int))) or v <= 0:
                kind = "a positive integer" if integer else "a positive number"
                raise ExtractError(f"{name} must be {kind}, got {v!r}")

        for name in ("every", "num_frames", "max_frames", "batch_size", "videos_per_shard"):
            positive(name)
        positive("fps", integer=False)
        positive("decode_timeout", integer=False)
        if self.every is not None and self.num_frames is not None:
            raise ExtractError("choose one sampling policy: every or num_frames, not both")
        if self.every is None and self.num_frames is None and self.fps is None:
            raise ExtractError("no sampling policy: set fps, every or num_frames")
        if self.dtype not in ("float16", "float32"):
            raise ExtractError(f"dtype must be float16 or float32, got {self.dtype!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ExtractError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.format not in ("zarr", "hdf5"):
            raise ExtractError(f"format must be zarr or hdf5, got {self.format!r}")
        if not is_device_name(self.device):
            raise ExtractError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.workers < 0 or self.threads < 0 or self.decoders < 0:
            raise ExtractError("workers, threads and decoders must be >= 0")

    def sampling(self) -> dict:
        """The active sampling policy, as recorded in the cache fingerprint."""
        if self.num_frames is not None:
            pol = {"policy": "num_frames", "num_frames": self.num_frames}
        elif self.every is not None:
            pol = {"policy": "every", "every": self.every}
        else:
            pol = {"policy": "fps", "fps": float(self.fps)}
        pol["max_frames"] = self.max_frames
        return pol

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["extensions"] = list(self.extensions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExtractConfig:
        """Build from a mapping (e.g. params.yaml's `extract:` section); unknown keys are an error."""
        check_keys(cls, d, "extract setting(s)", ExtractError)
        d = dict(d)
        if "extensions" in d and d["extensions"] is not None:
            d["extensions"] = tuple(d["extensions"])
        return cls(**d)
