"""The labelled videos of a cache, split: what training, evaluation and the baselines read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import storage
from temporal.config import Config, memory_bytes
from temporal.data import (
    AnyVideos,
    load_videos,
)
from temporal.labels import LabelError, Labels, check_classes, match_cache, read_labels, train_subset


@dataclass
class Data:
    labels: Labels  # row i of labels is video i of videos
    videos: AnyVideos
    train: list[int]  # rows (after train_fraction)
    val: list[int]
    test: list[int]
    fingerprint: dict
    provenance: dict = field(default_factory=dict)  # how the cache was made (weights source, versions)

    def outside_test(self) -> list[int]:
        """Every row outside the test split, whatever train_fraction left out (labelled or not, their
        labels are never read): the videos whose frames fit the prototypes with fit_on all."""
        held = set(self.test)
        return [i for i in range(len(self.labels)) if i not in held]


def load_data(cache_dir: str | os.PathLike, labels_csv: str | os.PathLike, cfg: Config,
              task: str | None = None, classes: list[str] | None = None, log=print,
              training: bool = True) -> Data:
    """The labelled videos of a cache; `training` subsets the train split and checks every class
    has training videos (evaluation needs neither: its labels file may hold no train rows)."""
    cache = storage.open_cache(cache_dir)
    labels = read_labels(labels_csv, task or cfg.labels.task)
    if classes is not None:
        labels = remap_classes(labels, classes)
    labels, notes = match_cache(labels, cache, cfg.labels.skip_missing)
    fraction = cfg.labels.train_fraction
    train = train_subset(labels, fraction, cfg.optim.seed) if training else labels.rows("train")
    n_all = len(labels.rows("train"))
    if len(train) < n_all:
        notes.append(f"train_fraction {fraction}: training on {len(train)} of {n_all} train videos")
    if training:
        check_classes(labels, train)
    for note in notes:
        log(f"note: {note}")
    videos = open_videos(cache, labels.ids, cfg, log)
    return Data(labels, videos, train, labels.rows("val"), labels.rows("test"), cache.fingerprint,
                cache.info.get("provenance") or {})


def open_videos(cache, ids: list[str], cfg: Config, log=print) -> AnyVideos:
    """The videos `ids` in memory, or read from the shards as needed when they exceed memory_budget."""
    budget = memory_bytes(cfg.data.memory_budget)
    videos = load_videos(cache, ids, budget)
    if videos.lazy:
        log(f"note: the features exceed memory_budget {cfg.data.memory_budget} ({budget / 2**20:.0f} MiB): "
            "reading them from the shards as batches need them")
    return videos


def remap_classes(labels: Labels, classes: list[str]) -> Labels:
    """Express `labels` in a trained model's class list (a class it never saw is an error)."""
    if labels.task == "regression":
        return labels
    unknown = sorted(set(labels.classes) - set(classes))
    if unknown:
        raise LabelError(f"labels have class(es) the model was not trained on: {unknown[:10]}")
    index = {c: i for i, c in enumerate(classes)}
    if labels.task == "single":
        targets = [index[labels.classes[t]] for t in labels.targets]
    else:
        targets = [sorted(index[labels.classes[c]] for c in t) for t in labels.targets]
    return Labels(labels.task, list(classes), labels.ids, labels.splits, targets, labels.notes)
