"""The DVC stages: each reads its section of params.yaml and calls one stage's Python API.

    python -m pipeline prepare  --out data/demo
    python -m pipeline extract  --videos data/demo/videos --out cache
    python -m pipeline train    --labels L.csv --cache cache --out runs/order/stan
    python -m pipeline evaluate --run runs/order/stan --metrics M.json --predictions P.csv
    python -m pipeline baseline --labels L.csv --cache cache --out runs/order/baseline --metrics M.json
    python -m pipeline efficiency --labels L.csv --cache cache --out runs/order/efficiency --plot E.csv
    python -m pipeline report   # experiments side by side, from `dvc exp show --json`
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pipeline.demo import DemoConfig
from pipeline.params import section


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def prepare(params: dict, out: Path) -> None:
    from pipeline.demo import make_demo

    cfg = section(params, "demo", DemoConfig)
    paths = make_demo(out, cfg)
    print(f"demo: {cfg.videos} videos of {cfg.min_seconds:g}-{cfg.max_seconds:g} s -> {out}; "
          f"labels: {', '.join(str(p) for p in paths.values())}")


def extract(params: dict, videos: Path, out: Path) -> int:
    """Extract, resuming a cache left by an interrupted run (dvc.yaml keeps it: `persist`).

    A cache of other settings is what DVC would delete before re-running the stage: so do we.
    Videos that fail are listed in cache/failures.jsonl and the summary; the stage fails only
    when nothing at all could be extracted, so one bad file does not block every experiment.
    """
    import shutil

    import extract
    import storage

    cfg = extract.ExtractConfig.from_dict(params.get("extract") or {})
    try:
        summary = extract.run(cfg, videos, out)
    except storage.FingerprintMismatch as e:
        print(f"note: {out} was extracted with other settings; starting it afresh\n{e}")
        shutil.rmtree(out)
        summary = extract.run(cfg, videos, out)
    print(summary.line())
    return 0 if summary.done + summary.skipped else 1


def _temporal_config(params: dict):
    import temporal

    return temporal.Config.from_dict(params.get("temporal") or {})


def train(params: dict, cache: Path, labels: Path, out: Path) -> None:
    import temporal

    temporal.train(cache, labels, out, _temporal_config(params))


def evaluate(params: dict, run: Path, split: str, metrics: Path, predictions: Path) -> None:
    import temporal

    result = temporal.evaluate(run, split, metrics_path=metrics, predictions_path=predictions)
    summary = json.loads((run / "summary.json").read_text())
    result = {**result, "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"]}
    _write_json(metrics, result)


def baseline(params: dict, cache: Path, labels: Path, out: Path, metrics: Path, split: str) -> None:
    import temporal

    result = temporal.baseline(cache, labels, out, _temporal_config(params))
    # the metrics file DVC compares: each baseline's figures on the evaluation split
    _write_json(metrics, {name: res[split] for name, res in result.items() if split in res})


def efficiency(params: dict, cache: Path, labels: Path, out: Path, plot: Path, split: str) -> None:
    """Train STAN and the linear probe on growing fractions of the train split: one CSV row each."""
    import temporal

    cfg = _temporal_config(params)
    fractions = sorted(float(f) for f in (params.get("efficiency") or {}).get("train_fractions", [1.0]))
    rows = []
    for frac in fractions:
        sub = cfg.replace(train_fraction=frac)
        run = temporal.train(cache, labels, out / f"stan_{frac:g}", sub)
        stan = temporal.evaluate(run, split)
        probe = temporal.baseline(cache, labels, out / f"probe_{frac:g}", sub, mlp=False)["linear"][split]
        row = {"train_fraction": frac}
        for name, res in (("stan", stan), ("linear", probe)):
            row.update({f"{name}_{k}": v for k, v in res.items() if isinstance(v, float)})
        rows.append(row)
    plot.parent.mkdir(parents=True, exist_ok=True)
    with plot.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"data efficiency: {len(rows)} fractions -> {plot}")
