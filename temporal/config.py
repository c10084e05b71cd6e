"""Every model, data and training option of stage two, as one flat dataclass.

The defaults are the configuration measured best on the events benchmark (docs/ablations.md);
params.yaml repeats them, so `python -m temporal train` and `dvc repro` train the same model.

The field names are the keys of the `temporal:` section of params.yaml, so keep them plain and stable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.device import is_device_name
from storage.settings import check_keys, field_types

CHOICES = {
    "model": ("stan", "meanpool"),
    "streams": ("both", "spatial", "temporal", "none"),
    "fusion": ("cross", "concat", "sum", "late"),
    "time_encoding": ("timestamp", "index", "none"),
    "pool": ("cls", "mean", "both"),
    "stream_input": ("features", "events"),
    "task": ("auto", "single", "multi", "regression"),
    "sampling": ("uniform", "window"),
    "eval_mode": ("views", "full"),
}


@dataclass
class Config:
    # --- model ---
    model: str = "stan"  # stan | meanpool (mean-pooled features -> MLP, trained by the same loop)
    streams: str = "none"  # none (the event summary alone) | both | spatial | temporal
    fusion: str = "cross"  # cross | concat | sum | late (used when streams == both)
    dim: int = 128  # d, the width of the streams and of the event summary's vector
    heads: int = 4
    depth_spatial: int = 1  # L_s
    depth_temporal: int = 1  # L_t
    depth_fusion: int = 1  # L_f (bidirectional cross-attention blocks; fusion == cross only)
    clip_len: int = 1  # k: frames per temporal-stream clip (strided Conv1d); >1 blurs 1-frame changes
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    time_encoding: str = "timestamp"  # timestamp (seconds) | index (frame position) | none
    pool: str = "mean"  # a stream's summary: its CLS token | the mean of its frame tokens | both
    time_bias: bool = False  # attention logits minus slope_h x |t_i - t_j| in seconds (ALiBi in time)
    recurrence: bool = False  # the temporal stream also reads how alike each frame is to frames near and far
    events: int = 24  # K>0: an event summary (share, mean position, onsets of K learned prototypes); 0: off
    event_pairs: bool = True  # the event summary also reads, per pair of prototypes, which comes first
    event_l1: float = 0.3  # group-lasso weight on the event summary's numbers (events > 0): >0 keeps few
    stream_input: str = "features"  # the streams read the frame features | events (prototype assignments)
    aux_loss: float = 0.0  # >0: each branch (stream, summary) also has a head and a loss, of this weight
    branch_drop: float = 0.0  # training: probability of zeroing each branch before the head (never all)
    pca_dims: int = 0  # >0: STAN reads the frames' leading principal components (whitened), 0: raw features
    # --- data ---
    task: str = "auto"  # auto | single | multi | regression
    frames: int = 64  # frames sampled per video per training step
    sampling: str = "uniform"  # uniform (one frame per equal segment, jittered) | window (contiguous)
    eval_mode: str = "views"  # views (eval_views samples like training, averaged) | full (every frame)
    eval_views: int = 4
    train_fraction: float = 1.0  # deterministic, nested, class-stratified subset of the train split
    skip_missing: bool = False  # skip (and count) labelled videos absent from the cache instead of failing
    aug_noise: float = 0.0  # training: Gaussian noise on the features, in units of each feature's std
    aug_drop: float = 0.0  # training: probability of masking out each sampled frame
    init: str = ""  # a `python -m temporal pretrain` run to start from ("" = random init)
    # --- optimisation ---
    epochs: int = 60
    batch_size: int = 4  # videos per training step; small: more, noisier steps, which 100 videos need
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 1.0  # epochs of linear warm-up, then cosine decay to lr / 10
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    patience: int = 20  # epochs without improvement of `monitor` on val before stopping; 0 disables
    monitor: str = "loss"  # val loss, or a val metric name (accuracy, macro_f1, map, mse, r2, ...)
    seed: int = 0
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N (storage.device.pick_device)
    # features held in memory: auto (half the memory available at start) or a size (2GB, 512MiB, bytes);
    # a cache larger than that is read from its shards as batches need it (the results do not change)
    memory_budget: str = "auto"

    def __post_init__(self) -> None:
        for name, want in field_types(Config).items():
            v = getattr(self, name)
            if float in want and isinstance(v, str):  # YAML 1.1 reads `5e-4` as a string
                with contextlib.suppress(ValueError):
                    v = float(v)
            if float in want and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            setattr(self, name, v)
            if not isinstance(v, want) or (bool not in want and isinstance(v, bool)):
                kind = " or ".join("None" if t is type(None) else t.__name__ for t in want)
                raise ConfigError(f"temporal option {name}: expected {kind}, got {v!r}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"temporal option {name}={getattr(self, name)!r}: choose one of {allowed}")
        positive = ("dim", "heads", "clip_len", "frames", "eval_views", "epochs", "batch_size", "lr")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"temporal option {name} must be > 0, got {getattr(self, name)}")
        for name in ("depth_spatial", "depth_temporal", "depth_fusion", "weight_decay", "warmup",
                     "grad_clip", "patience", "mlp_ratio", "pca_dims", "events", "event_l1", "aux_loss"):
            if getattr(self, name) < 0:
                raise ConfigError(f"temporal option {name} must be >= 0, got {getattr(self, name)}")
        if not is_device_name(self.device):
            raise ConfigError(f"temporal option device={self.device!r}: choose auto, cpu, cuda or cuda:N")
        if self.streams == "none" and not self.events:
            raise ConfigError("streams=none leaves the head nothing to read: set events > 0")
        if self.stream_input == "events" and not self.events:
            raise ConfigError("stream_input=events reads the event summary's prototypes: set events > 0")
        if not 0.0 <= self.branch_drop < 1.0:
            raise ConfigError(f"branch_drop must be in [0, 1), got {self.branch_drop}")
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.aug_drop < 1.0 or self.aug_noise < 0:
            raise ConfigError(f"aug_drop must be in [0, 1) and aug_noise >= 0, got {self.aug_drop}, "
                              f"{self.aug_noise}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        memory_bytes(self.memory_budget)  # refused now, not after the cache is opened

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        """A Config from a mapping; unknown keys are an error (a typo must not be silently ignored)."""
        d = dict(d or {})
        check_keys(cls, d, "temporal option(s)", ConfigError)
        pairs = d.get("event_pairs")
        if type(pairs) is int:  # runs saved while it was a rank r of bilinear forms
            if pairs:
                raise ConfigError(f"event_pairs={pairs}: the rank-r pair readout is gone (the event summary "
                                  "now reads every pair, with event_l1 to keep few): write true or false, "
                                  "and train a run saved with a rank again")
            d["event_pairs"] = False
        return cls(**d)

    def replace(self, **changes: Any) -> Config:
        return Config.from_dict({**self.to_dict(), **changes})


class ConfigError(ValueError):
    pass


def option_help() -> dict[str, str]:
    """Each Config field's trailing comment in this file: the one description, for `--help` too."""
    source = inspect.getsource(Config)
    return {m[1]: m[2].strip() for m in re.finditer(r"^    (\w+): [^=\n]+=[^#\n]*#(.*)$", source, re.M)}


def _available_memory() -> int:
    """Bytes the system can give without swapping (Linux MemAvailable counts reclaimable page cache)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def memory_bytes(budget: str) -> int:
    """Bytes of a `memory_budget`: "2GB", "1.5GiB", "512mb", "1000000"; "auto": half the memory
    available now."""
    text = budget.strip().lower().replace(" ", "")
    if text == "auto":
        return _available_memory() // 2
    number = text.rstrip("kmgtib")
    unit = text[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise ConfigError(f"temporal option memory_budget={budget!r}: give auto or a size such as 2GB, "
                          "512MiB or a number of bytes")
    return int(value * _UNITS[unit])


def as_config(config: Config | dict | None = None, **overrides: Any) -> Config:
    """Config, dict or None (defaults), plus keyword overrides; always validated."""
    base = config.to_dict() if isinstance(config, Config) else dict(config or {})
    return Config.from_dict({**base, **overrides})


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a YAML/JSON file: either flat, or under a top-level `temporal:` key (params.yaml)."""
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        d = json.loads(text)
    else:
        import yaml

        d = yaml.safe_load(text) or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of options")
    if isinstance(d.get("temporal"), dict):
        d = d["temporal"]
    return d
