"""DVC stage `baseline@<labelset>`: the linear probe and the mean-pool MLP beside STAN; their
metrics, and beside them their run info (video counts, the MLP's epochs and training seconds).

Params: the temporal.* keys these baselines read, not STAN's model switches, so an ablation of
fusion, streams, depth ... does not re-run them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import temporal
from pipeline.metrics import training_info, write_metrics
from pipeline.params import load_params, parse, stage_parser, training_inputs
from pipeline.threads import one_thread
from temporal.config import BASELINE_OPTIONS

PARAMS = [f"temporal.{name}" for name in BASELINE_OPTIONS]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("baseline", __doc__)
    training_inputs(ap)
    ap.add_argument("--out", required=True, help="run folder of the baselines")
    ap.add_argument("--metrics", type=Path, required=True,
                    help="metrics JSON to write (the evaluation split's figures; what DVC compares)")
    ap.add_argument("--info", type=Path, required=True,
                    help="run info JSON to write: video counts, the MLP's epochs and training seconds")
    ap.add_argument("--split", default="test",
                    help="split the metrics file reports (default: test)")
    a = parse(ap, argv)
    one_thread()
    cfg = temporal.Config.from_dict(load_params(a.params).get("temporal") or {})
    result = temporal.baseline(a.cache, a.labels, a.out, cfg)
    # each baseline's figures on the evaluation split
    result = {name: res[a.split] for name, res in result.items() if a.split in res}
    write_metrics(a.metrics, a.info, result, mlp_training=training_info(Path(a.out) / "mlp"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
