"""DVC stage `evaluate@<labelset>`: a trained run's metrics and per-video predictions on one split,
and beside them its run info (the split, video count, epochs, training seconds).

Reads no params: the run directory holds the settings it was trained with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import temporal
from pipeline.metrics import training_info, write_metrics
from pipeline.params import parse, stage_parser
from pipeline.threads import one_thread

PARAMS: list[str] = []


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("evaluate", __doc__)
    ap.add_argument("--run", type=Path, required=True,
                    help="a trained run folder")
    ap.add_argument("--split", default="test",
                    help="split to evaluate (default: test)")
    ap.add_argument("--metrics", type=Path, required=True,
                    help="metrics JSON to write (what DVC compares)")
    ap.add_argument("--info", type=Path, required=True,
                    help="run info JSON to write: the split, video count, epochs, training seconds")
    ap.add_argument("--predictions", type=Path, required=True,
                    help="per-video predictions CSV to write")
    a = parse(ap, argv)
    one_thread()
    result = temporal.evaluate(a.run, a.split, metrics_path=a.metrics, predictions_path=a.predictions)
    write_metrics(a.metrics, a.info, result, training=training_info(a.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
