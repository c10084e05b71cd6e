"""DVC stage `evaluate@<labelset>`: a trained run's metrics and per-video predictions on one split.

Reads no params: the run directory holds the settings it was trained with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import temporal
from pipeline.params import parse, stage_parser
from storage.files import write_json

PARAMS: list[str] = []


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("evaluate", __doc__)
    ap.add_argument("--run", type=Path, required=True,
                    help="a trained run folder")
    ap.add_argument("--split", default="test",
                    help="split to evaluate (default: test)")
    ap.add_argument("--metrics", type=Path, required=True,
                    help="metrics JSON to write")
    ap.add_argument("--predictions", type=Path, required=True,
                    help="per-video predictions CSV to write")
    a = parse(ap, argv)
    result = temporal.evaluate(a.run, a.split, metrics_path=a.metrics, predictions_path=a.predictions)
    summary = json.loads((a.run / "summary.json").read_text())
    result = {**result, "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"]}
    write_json(a.metrics, result, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
