"""Labels CSV (`video_id,label,split`): parsing, task inference, checks against the cache, subsets.

Nothing is dropped silently: a problem is an error that names the rows, or (where skipping is
asked for or unavoidable) a printed count of what was skipped and why.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import storage

SPLITS = ("train", "val", "test")


class LabelError(ValueError):
    pass


@dataclass
class Labels:
    task: str  # single | multi | regression
    classes: list[str]  # class names (empty for regression); a target indexes into this
    ids: list[str]  # video ids, in file order
    splits: list[str]  # split of each id
    targets: list  # int class (single), list[int] of classes (multi), float (regression)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def target_array(self, rows: list[int]) -> np.ndarray:
        """int64 [N] (single), float32 multi-hot [N, C] (multi), float32 [N] (regression)."""
        if self.task == "single":
            return np.array([self.targets[i] for i in rows], dtype=np.int64)
        if self.task == "multi":
            y = np.zeros((len(rows), len(self.classes)), dtype=np.float32)
            for r, i in enumerate(rows):
                y[r, self.targets[i]] = 1.0
            return y
        return np.array([self.targets[i] for i in rows], dtype=np.float32)

    def label_text(self, i: int) -> str:
        """The label of row i as written in a CSV (classes joined by '|' for multi-label)."""
        if self.task == "single":
            return self.classes[self.targets[i]]
        if self.task == "multi":
            return "|".join(self.classes[c] for c in self.targets[i])
        return repr(float(self.targets[i]))

    def select(self, keep: list[int]) -> Labels:
        return Labels(self.task, self.classes, [self.ids[i] for i in keep], [self.splits[i] for i in keep],
                      [self.targets[i] for i in keep], list(self.notes))


def _float(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _class_order(names: set[str]) -> list[str]:
    # integer class names sort numerically ("2" before "10"), anything else alphabetically
    if all(_float(n) is not None and float(n).is_integer() for n in names):
        return sorted(names, key=lambda n: float(n))
    return sorted(names)


def infer_task(raw: list[str]) -> str:
    """multi if any label has '|'; regression if all are numbers and one is not an integer; else single."""
    if any("|" in s for s in raw):
        return "multi"
    nums = [_float(s) for s in raw]
    if raw and all(v is not None for v in nums) and not all(v.is_integer() for v in nums):
        return "regression"
    return "single"


def read_labels(path: str | os.PathLike, task: str = "auto") -> Labels:
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in ("video_id", "label", "split") if c not in header]
            if missing:
                raise LabelError(f"{path}: missing column(s) {missing}; expected a header "
                                 f"video_id,label,split (found {header})")
            reader.fieldnames = header
            records = [(n + 2, r) for n, r in enumerate(reader)]  # line numbers as an editor shows them
    except FileNotFoundError:
        raise LabelError(f"{path}: labels file not found") from None

    ids, splits, raw, errors = [], [], [], []
    seen: dict[str, int] = {}
    for line, r in records:
        vid, lab, split = ((r.get(c) or "").strip() for c in ("video_id", "label", "split"))
        if not vid:
            errors.append(f"line {line}: empty video_id")
            continue
        try:
            storage.check_video_id(vid)
        except ValueError as e:  # ids are paths under the videos root; never outside it
            errors.append(f"line {line}: {e}")
            continue
        if vid in seen:
            errors.append(f"line {line}: {vid!r} already labelled on line {seen[vid]}")
            continue
        if split not in SPLITS:
            errors.append(f"line {line}: split {split!r} for {vid!r} is not one of {SPLITS}")
            continue
        seen[vid] = line
        ids.append(vid)
        splits.append(split)
        raw.append(lab)
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise LabelError(f"{path}: {len(errors)} bad row(s):\n  " + "\n  ".join(errors[:10]) + more)
    if not ids:
        raise LabelError(f"{path}: no labelled videos")

    notes = []
    if task == "auto":
        task = infer_task(raw)
        if task == "single" and all(_float(s) is not None for s in raw):
            notes.append("labels are all integers: treated as classes (set task: regression otherwise)")
    if task not in ("single", "multi", "regression"):
        raise LabelError(f"unknown task {task!r}")

    bad, targets, classes = [], [], []
    if task == "regression":
        for vid, s in zip(ids, raw, strict=True):
            v = _float(s)
            if v is None:
                bad.append(f"{vid!r}: label {s!r} is not a finite number")
            targets.append(v)
    elif task == "single":
        for vid, s in zip(ids, raw, strict=True):
            if not s:
                bad.append(f"{vid!r}: empty label")
            if "|" in s:
                bad.append(f"{vid!r}: label {s!r} has several classes but task is single-label")
        classes = _class_order(set(raw))
        index = {c: i for i, c in enumerate(classes)}
        targets = [index[s] for s in raw]
    else:
        # an empty multi-label is a video with none of the classes: a legitimate all-negative example
        parts = [sorted({p.strip() for p in s.split("|") if p.strip()}) for s in raw]
        classes = _class_order({p for ps in parts for p in ps})
        index = {c: i for i, c in enumerate(classes)}
        targets = [[index[p] for p in ps] for ps in parts]
    if bad:
        raise LabelError(f"{path}: {len(bad)} bad label(s) for task {task}:\n  " + "\n  ".join(bad[:10]))
    if task != "regression" and len(classes) < 2:
        raise LabelError(f"{path}: {task}-label task needs at least 2 classes, found {classes}")
    return Labels(task, classes, ids, splits, targets, notes)


def test_videos(path: str | os.PathLike) -> set[str]:
    """The test-split videos of a labels CSV, or of every CSV in a folder: what pre-training leaves
    out so that no test video is seen, even unlabelled, before it is scored."""
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise LabelError(f"{path}: no labels CSV in this folder")
    held: set[str] = set()
    for f in files:
        lab = read_labels(f)
        held.update(lab.ids[i] for i in lab.rows("test"))
    return held


def match_cache(labels: Labels, cache, skip_missing: bool = False) -> tuple[Labels, list[str]]:
    """Keep the labelled videos the cache can serve; returns (labels, notes to print).

    Ids absent from the cache are an error unless `skip_missing`; videos with zero frames cannot
    be classified and are always skipped. Both are counted, with the reason.
    """
    missing = [v for v in labels.ids if v not in cache]
    notes = list(labels.notes)
    if missing:
        failed = cache.failures()
        n_failed = sum(v in failed for v in missing)
        why = f" ({n_failed} of them failed extraction, see failures.jsonl)" if n_failed else ""
        example = ", ".join(repr(v) for v in missing[:5])
        if not skip_missing:
            raise LabelError(
                f"{len(missing)} labelled video(s) are not in the cache {cache.root}{why}: {example}"
                + (" ..." if len(missing) > 5 else "")
                + "\nExtract them, fix the ids (they are paths relative to the videos root), "
                "or set skip_missing to train without them."
            )
        notes.append(f"skipped {len(missing)} labelled video(s) not in the cache{why}: {example}")
    empty = [v for v in labels.ids if v in cache and cache.num_frames(v) == 0]
    if empty:
        notes.append(f"skipped {len(empty)} video(s) with zero frames in the cache: "
                     + ", ".join(repr(v) for v in empty[:5]))
    drop = set(missing) | set(empty)
    unlabelled = len(cache) - (len(labels.ids) - len(missing))
    if unlabelled > 0:
        notes.append(f"{unlabelled} cached video(s) have no label and are not used")
    kept = labels.select([i for i, v in enumerate(labels.ids) if v not in drop])
    return kept, notes


def _rank(vid: str, seed: int) -> str:
    # a per-(seed, id) hash: the subset does not depend on file order, differs between seeds (so
    # seeds give error bars over subsets too), and for one seed smaller fractions are subsets of
    # larger ones, so a data-efficiency curve compares nested training sets
    return hashlib.sha1(f"{seed}:{vid}".encode()).hexdigest()


def _strata(labels: Labels, rows: list[int]) -> list[object]:
    """What a subset keeps in proportion: the class (single), the rarest class of the video
    (multi: every class stays represented), the quintile of the target (regression)."""
    if labels.task == "single":
        return [labels.targets[i] for i in rows]
    if labels.task == "multi":
        freq = np.zeros(len(labels.classes), dtype=int)
        for i in rows:
            freq[labels.targets[i]] += 1
        return [min(labels.targets[i], key=lambda c: (freq[c], c)) if labels.targets[i] else -1 for i in rows]
    y = np.array([labels.targets[i] for i in rows], dtype=np.float64)
    return list(np.searchsorted(np.quantile(y, [0.2, 0.4, 0.6, 0.8]), y, side="right"))


def train_subset(labels: Labels, fraction: float, seed: int = 0) -> list[int]:
    """Rows of the train split kept by `fraction`, stratified (see `_strata`, at least one per
    stratum), chosen by `seed`."""
    rows = labels.rows("train")
    if fraction >= 1.0 or not rows:
        return rows
    groups: dict[object, list[int]] = {}
    for i, key in zip(rows, _strata(labels, rows), strict=True):
        groups.setdefault(key, []).append(i)
    keep = []
    for members in groups.values():
        members.sort(key=lambda i: _rank(labels.ids[i], seed))
        keep += members[: max(1, math.ceil(fraction * len(members)))]
    return sorted(keep)


def check_classes(labels: Labels, train_rows: list[int]) -> None:
    """Every class needs training examples (a class seen only in val/test cannot be learnt)."""
    if not train_rows:
        raise LabelError("the train split is empty (after skipping/subsetting): nothing to train on")
    if labels.task == "regression":
        return
    counts = np.zeros(len(labels.classes), dtype=int)
    for i in train_rows:
        t = labels.targets[i]
        counts[t] += 1
    empty = [labels.classes[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise LabelError(f"{len(empty)} class(es) have no training videos: "
                         + ", ".join(repr(c) for c in empty[:10])
                         + "\nAdd training videos for them or remove their rows from the labels.")
