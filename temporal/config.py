"""Every option of stage two, in parts: each part is handed only to the code that reads it.

    Config
      model: stan | meanpool     which network `train` builds
      stan       StanConfig      the two-stream network and its event summary (model.py)
      meanpool   MeanPoolConfig  the mean-pool MLP baseline (model.py)
      loss       LossConfig      what training adds to STAN's task loss, the group lasso (train.py)
      data       DataConfig      what a training step sees of a video, how features are held (loop.py)
      labels     LabelsConfig    which labels, how many of them (dataset.py)
      eval       EvalConfig      how val and test are scored, when val stops training (scoring.py)
      optim      OptimConfig     AdamW, the schedule, the seed (loop.py)
      init, device

`pretrain` reads stan, data and optim; the baselines read meanpool, data, labels, eval and optim.
params.yaml's `temporal:` section has the same shape. Its defaults are this file's: a test checks
that the two agree, and `python -m temporal defaults` prints the section anew (the dataclasses are
the one home because the CLI, the API and the runs all start from them; params.yaml is what DVC
and a user edit).

Every option also has a flat name, the CLI flag (`--streams`, `--eval-mode`): the field's name,
but for the few in `FLAT_NAMES`. Flat names, dotted paths (`stan.width`) and nested mappings are
all accepted, and `migrate` is the one place that reads what older versions saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.device import is_device_name
from storage.settings import field_types

CHOICES = {
    "model": ("stan", "meanpool"),
    "stan.streams": ("both", "spatial", "temporal", "none"),
    "stan.fusion": ("cross", "concat", "sum", "late"),
    "stan.time_encoding": ("timestamp", "index", "none"),
    "stan.pool": ("cls", "mean", "both"),
    "stan.stream_input": ("features", "events", "mixed"),
    "stan.prototypes": ("learned", "fitted"),
    "stan.event_norm": ("centre", "layer"),
    "loss.lasso": ("proximal", "penalty"),
    "labels.task": ("auto", "single", "multi", "regression"),
    "data.sampling": ("uniform", "window"),
    "data.fit_on": ("train", "all"),
    "eval.mode": ("views", "full"),
}


class ConfigError(ValueError):
    pass


@dataclass
class StanConfig:
    streams: str = "both"  # both | spatial | temporal | none (the event summary alone)
    fusion: str = "cross"  # cross | concat | sum | late (used when streams == both)
    width: int = 128  # d, the width of the streams and of the event summary's vector
    attention_heads: int = 4  # per attention layer (width must be divisible by it)
    depth_spatial: int = 1  # L_s, blocks of the spatial stream
    depth_temporal: int = 1  # L_t, blocks of the temporal stream
    depth_fusion: int = 1  # L_f, bidirectional cross-attention blocks (fusion == cross only)
    clip_len: int = 1  # k: frames per temporal-stream clip (strided Conv1d); >1 blurs 1-frame changes
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, in units of width
    dropout: float = 0.1  # in the blocks and the heads
    time_encoding: str = "timestamp"  # timestamp (seconds) | index (frame position) | none
    time_bias: bool = False  # attention logits minus slope_h x |t_i - t_j| in seconds (ALiBi in time)
    recurrence: bool = True  # self-similarity: each frame to frames near and far, and whether a shot returns
    pool: str = "mean"  # a stream's summary: its CLS token | the mean of its frame tokens | both
    events: int = 24  # K>0: an event summary (share, mean position, onsets of K prototypes); 0: off
    event_pairs: bool = True  # the event summary also reads, per pair of prototypes, which comes first
    event_gaps: bool = True  # the event summary also reads, per pair of prototypes, how far apart they are
    event_norm: str = "centre"  # the summary's numbers: centre (less their means) | layer (a LayerNorm)
    prototypes: str = "fitted"  # the summary's: learned (from their k-means start) | fitted (k-means, kept)
    stream_input: str = "mixed"  # features | events (prototype assignments) | mixed (temporal: events)
    pca_dims: int = 0  # >0: STAN reads the frames' leading principal components (whitened), 0: raw features


@dataclass
class MeanPoolConfig:
    hidden: int = 128  # the MLP's hidden width
    dropout: float = 0.1  # before the MLP's output layer


@dataclass
class LossConfig:
    event_l1: float = 3.0  # group-lasso weight on the event summary's numbers (events > 0): >0 keeps few
    # proximal: after each step every number's weights shrink by lr x event_l1 in norm (to 0 below it),
    # outside AdamW and grad_clip | penalty: a loss term, its gradient through both (docs/ablations.md)
    lasso: str = "proximal"  # how event_l1 acts: proximal | penalty
    aux_loss: float = 1.0  # >0: each branch (stream, summary) also has a head and a loss, of this weight
    branch_drop: float = 0.5  # training: probability of zeroing each branch before the head (never all)


@dataclass
class DataConfig:
    frames: int = 64  # frames sampled per video per training step
    sampling: str = "uniform"  # uniform (one frame per equal segment, jittered) | window (contiguous)
    aug_noise: float = 0.0  # training: Gaussian noise on the features, in units of each feature's std
    aug_drop: float = 0.0  # training: probability of masking out each sampled frame
    # the event prototypes and the PCA map are fitted on frames before training, no label read
    fit_on: str = "train"  # whose frames fit them: train (the labelled subset) | all (every video but test)
    # features held in memory: auto (half the memory available at start) or a size (2GB, 512MiB, bytes);
    # a cache larger than that is read from its shards as batches need it (the results do not change)
    memory_budget: str = "auto"  # auto | a size such as 2GB (larger caches are read lazily)


@dataclass
class LabelsConfig:
    task: str = "auto"  # auto | single | multi | regression
    train_fraction: float = 1.0  # deterministic, nested, class-stratified subset of the train split
    skip_missing: bool = False  # skip (and count) labelled videos absent from the cache instead of failing


@dataclass
class EvalConfig:
    mode: str = "views"  # views (eval_views samples like training, averaged) | full (every frame)
    views: int = 4  # samples of `frames` frames per video, averaged (mode == views)
    monitor: str = "loss"  # val loss, or a val metric name (accuracy, macro_f1, map, mse, r2, ...)
    patience: int = 20  # epochs without improvement of `monitor` on val before stopping; 0 disables


@dataclass
class OptimConfig:
    epochs: int = 60  # passes over the train split
    batch_size: int = 4  # videos per training step; small: more, noisier steps, which 100 videos need
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.05  # on weight matrices only
    warmup: float = 1.0  # epochs of linear warm-up, then cosine decay to lr / 10
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    ema: float = 0.0  # >0: val judges, and the run keeps, a moving average of the weights (decay per step)
    seed: int = 0  # initialisation, sampling, batches and the train_fraction subset


SECTIONS = {"stan": StanConfig, "meanpool": MeanPoolConfig, "loss": LossConfig, "data": DataConfig,
            "labels": LabelsConfig, "eval": EvalConfig, "optim": OptimConfig}
TOP = ("model", "init", "device")  # the options outside the parts
# flat names (CLI flags) that are not the field's own name: the field alone would be ambiguous
FLAT_NAMES = {"eval.mode": "eval_mode", "eval.views": "eval_views", "meanpool.hidden": "meanpool_hidden",
              "meanpool.dropout": "meanpool_dropout"}


@dataclass
class Config:
    model: str = "stan"  # stan | meanpool (mean-pooled features -> MLP, trained by the same loop)
    stan: StanConfig = field(default_factory=StanConfig)
    meanpool: MeanPoolConfig = field(default_factory=MeanPoolConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: str = ""  # a `python -m temporal pretrain` run to start from ("" = random init)
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N (storage.device.pick_device)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            part = getattr(self, name)
            if isinstance(part, dict):
                part = cls(**part)
            for key, want in field_types(cls).items():
                setattr(part, key, _coerce(f"{name}.{key}", getattr(part, key), want))
            setattr(self, name, part)
        for path, allowed in CHOICES.items():
            if self.get(path) not in allowed:
                raise ConfigError(f"temporal option {path}={self.get(path)!r}: choose one of {allowed}")
        s = self.stan
        for path in ("stan.width", "stan.attention_heads", "stan.clip_len", "data.frames", "eval.views",
                     "optim.epochs", "optim.batch_size", "optim.lr", "meanpool.hidden"):
            if self.get(path) <= 0:
                raise ConfigError(f"temporal option {path} must be > 0, got {self.get(path)}")
        for path in ("stan.depth_spatial", "stan.depth_temporal", "stan.depth_fusion", "stan.mlp_ratio",
                     "stan.pca_dims", "stan.events", "loss.event_l1", "loss.aux_loss", "optim.weight_decay",
                     "optim.warmup", "optim.grad_clip", "eval.patience"):
            if self.get(path) < 0:
                raise ConfigError(f"temporal option {path} must be >= 0, got {self.get(path)}")
        if not is_device_name(self.device):
            raise ConfigError(f"temporal option device={self.device!r}: choose auto, cpu, cuda or cuda:N")
        if s.streams == "none" and not s.events:
            raise ConfigError("stan.streams=none leaves the head nothing to read: set stan.events > 0")
        if s.stream_input == "events" and not s.events:  # (mixed without a summary reads features)
            raise ConfigError("stan.stream_input=events reads the event summary's prototypes: set events > 0")
        if s.width % s.attention_heads:
            raise ConfigError(f"stan.width ({s.width}) must be divisible by attention_heads "
                              f"({s.attention_heads})")
        for path in ("loss.branch_drop", "data.aug_drop", "stan.dropout", "meanpool.dropout", "optim.ema"):
            if not 0.0 <= self.get(path) < 1.0:
                raise ConfigError(f"temporal option {path} must be in [0, 1), got {self.get(path)}")
        if self.data.aug_noise < 0:
            raise ConfigError(f"data.aug_noise must be >= 0, got {self.data.aug_noise}")
        if not 0.0 < self.labels.train_fraction <= 1.0:
            raise ConfigError(f"labels.train_fraction must be in (0, 1], got {self.labels.train_fraction}")
        memory_bytes(self.data.memory_budget)  # refused now, not after the cache is opened

    def get(self, path: str) -> Any:
        """The value at a dotted path ("stan.width") or a top-level name ("device")."""
        part, _, key = path.rpartition(".")
        return getattr(getattr(self, part) if part else self, key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """{dotted path: value} of every option."""
        return {path: self.get(path) for path in paths()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        """A Config from nested parts, dotted paths or flat names (also as older versions saved
        them: `migrate`); an unknown key is an error (a typo must not be silently ignored)."""
        nested: dict[str, Any] = {name: {} for name in SECTIONS}
        for path, value in migrate(dict(d or {})).items():
            part, _, key = path.rpartition(".")
            if part:
                nested[part][key] = value
            else:
                nested[key] = value
        return cls(**nested)

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` (flat names or dotted paths, e.g. epochs=1, **{"stan.width": 64})."""
        return Config.from_dict({**self.flat(), **changes})


def _coerce(path: str, v: Any, want: tuple[type, ...]) -> Any:
    if float in want and isinstance(v, str):  # YAML 1.1 reads `5e-4` as a string
        with contextlib.suppress(ValueError):
            v = float(v)
    if float in want and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, want) or (bool not in want and isinstance(v, bool)):
        kind = " or ".join("None" if t is type(None) else t.__name__ for t in want)
        raise ConfigError(f"temporal option {path}: expected {kind}, got {v!r}")
    return v


def paths() -> list[str]:
    """Every option's dotted path, in the order of the dataclasses ("model", "stan.streams", ...)."""
    out = []
    for f in dataclasses.fields(Config):
        if f.name in SECTIONS:
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(SECTIONS[f.name])]
        else:
            out.append(f.name)
    return out


def flat_name(path: str) -> str:
    """The option's flat name (its CLI flag without dashes): the field's, or FLAT_NAMES'."""
    return FLAT_NAMES.get(path, path.rpartition(".")[2])


def section_paths(*sections: str) -> list[str]:
    """The dotted paths of the options in `sections` (part names, or top-level option names)."""
    return [p for p in paths() if p.partition(".")[0] in sections]


# the parts each command reads beside `train`, which reads them all (their --help shows just these)
# what pre-training reads: STAN's shape, the sampling and the optimiser (not which videos fit the
# prototypes, it fits them on all it is given, nor the weight average, which only train keeps)
PRETRAIN_OPTIONS = tuple(p for p in section_paths("stan", "data", "optim", "device")
                         if p not in ("data.fit_on", "optim.ema"))
BASELINE_OPTIONS = tuple(section_paths("meanpool", "data", "labels", "eval", "optim", "device"))

FLAT = {flat_name(p): p for p in paths()}
assert len(FLAT) == len(paths()), "two options share a flat name: add one to FLAT_NAMES"
# names older versions saved (runs, checkpoints, params files) -> the options they mean now
RENAMED = {"dim": ("stan.width", "meanpool.hidden"), "heads": ("stan.attention_heads",)}


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    """Options as {dotted path: value}, from any shape this or an older version wrote: nested
    parts, dotted paths, flat names, and the old flat names (`RENAMED`: `dim` was STAN's width
    and the mean-pool MLP's; a mean-pool run's `dropout` was its MLP's). Unknown keys are refused."""
    out: dict[str, Any] = {}
    meanpool_run = d.get("model") == "meanpool" and not isinstance(d.get("meanpool"), dict)
    unknown = []
    for key, value in d.items():
        if key in SECTIONS and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
            unknown += [f"{key}.{k}" for k in value if f"{key}.{k}" not in FLAT.values()]
        elif key in FLAT.values():
            out[key] = value
        elif key in FLAT:
            out[FLAT[key]] = value
            if key == "dropout" and meanpool_run:
                out["meanpool.dropout"] = value
        elif key in RENAMED:
            out.update({p: value for p in RENAMED[key]})
        else:
            unknown.append(key)
    if unknown:
        import difflib

        known = [*FLAT, *FLAT.values()]
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, n=1))
                             else "") for k in unknown]
        raise ConfigError(f"unknown temporal option(s): {', '.join(hints)}; "
                          "see python -m temporal train --help")
    pairs = out.get("stan.event_pairs")
    if type(pairs) is int:  # runs saved while it was a rank r of bilinear forms
        if pairs:
            raise ConfigError(f"event_pairs={pairs}: the rank-r pair readout is gone (the event summary "
                              "now reads every pair, with event_l1 to keep few): write true or false, "
                              "and train a run saved with a rank again")
        out["stan.event_pairs"] = False
    return out


# what a run saved before these options existed trained with (a flat save is one of those versions)
BEFORE = {"loss.event_l1": 0.0, "loss.lasso": "penalty", "loss.aux_loss": 0.0, "loss.branch_drop": 0.0,
          "stan.recurrence": False, "stan.prototypes": "learned", "stan.event_gaps": False,
          "stan.event_norm": "layer"}
# options a nested save of this layout may lack whose default has changed since (read as BEFORE says)
CHANGED = ("loss.lasso", "stan.prototypes", "stan.event_gaps", "stan.event_norm")


def saved_config(d: dict[str, Any]) -> Config:
    """The options a run or checkpoint saved (its config.json's "config"), by any version: the
    nested dict of this one, or the flat one of older ones, whose missing options are what those
    versions trained with (`BEFORE`), not today's defaults."""
    if not any(isinstance(v, dict) for v in d.values()):
        d = {**BEFORE, **migrate(d)}
    else:
        d = {**d}
        for path in CHANGED:
            part, key = path.split(".")
            if key not in d.get(part, {}):
                d[part] = {**d.get(part, {}), key: BEFORE[path]}
    return Config.from_dict(d)


def option_help() -> dict[str, str]:
    """Each option's trailing comment in this file, by dotted path: the one description, for `--help` too."""
    out = {}
    for name, cls in [("", Config), *SECTIONS.items()]:
        source = inspect.getsource(cls)
        for m in re.finditer(r"^    (\w+): [^=\n]+=[^#\n]*#(.*)$", source, re.M):
            if m[1] not in SECTIONS:
                out[f"{name}.{m[1]}" if name else m[1]] = m[2].strip()
    return out


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
    """Config, dict (any shape `from_dict` reads) or None (defaults), plus keyword overrides (flat
    names or dotted paths); always validated."""
    base = config.flat() if isinstance(config, Config) else migrate(dict(config or {}))
    return Config.from_dict({**base, **migrate(overrides)})


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a YAML/JSON file: at the top, or under a top-level `temporal:` key (params.yaml)."""
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


def defaults_yaml() -> str:
    """The `temporal:` section of params.yaml: every default, with its description."""
    described, defaults = option_help(), Config()
    lines = ["temporal:"]
    for p in paths():
        part, _, key = p.rpartition(".")
        if part and p == section_paths(part)[0]:
            lines.append(f"  {part}:")
        v = defaults.get(p)
        shown = str(v).lower() if isinstance(v, bool) else json.dumps(v) if v == "" else str(v)
        text = f"{'    ' if part else '  '}{key}: {shown}"
        lines.append(f"{text:<30}# {described[p]}" if p in described else text)
    return "\n".join(lines) + "\n"
