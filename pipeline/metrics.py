"""The DVC metrics files hold metrics only: what `dvc metrics diff` and `dvc exp show` compare.

Run facts, timing and counts (the split, video counts, epochs, seconds) change from run to run or
say nothing about quality, so they go to a separate run-info file beside them that dvc.yaml
declares as a plain output, never as metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from storage.files import write_json

FACTS = frozenset({"split", "videos", "best_epoch", "epochs_run", "stopped_early", "train_seconds",
                   "seconds", "params"})


def split_facts(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, facts) of a result, nested dicts split alike (the baselines': {"linear": {...}})."""
    metrics: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            m, f = split_facts(value)
            if m:
                metrics[key] = m
            if f:
                facts[key] = f
        elif key in FACTS:
            facts[key] = value
        else:
            metrics[key] = value
    return metrics, facts


def write_metrics(metrics_path: str | os.PathLike, info_path: str | os.PathLike, result: dict[str, Any],
                  **info: Any) -> None:
    """The metrics of `result` to `metrics_path`; its facts and `info` to `info_path`."""
    metrics, facts = split_facts(result)
    write_json(metrics_path, metrics, sort_keys=True)
    write_json(info_path, {**facts, **info}, sort_keys=True)


def training_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A training run's summary.json without its val metrics: epochs, seconds, parameter and video counts."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k != "val"}
