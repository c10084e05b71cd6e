"""DVC stage `baseline@<labelset>`: the linear probe and the mean-pool MLP beside STAN.

Params: the temporal.* keys these baselines read, not STAN's model switches, so an ablation of
fusion, streams, depth ... does not re-run them.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import temporal
from pipeline.params import load_params, stage_parser
from storage.files import write_json

# STAN's own switches: the mean-pool baselines never read them (the MLP takes `dim` and `dropout`)
STAN_ONLY = ("model", "streams", "fusion", "heads", "depth_spatial", "depth_temporal", "depth_fusion",
             "clip_len", "mlp_ratio", "time_encoding", "pool", "pca_dims", "events", "init")
PARAMS = [f"temporal.{f.name}" for f in dataclasses.fields(temporal.Config) if f.name not in STAN_ONLY]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("baseline", __doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--split", default="test")
    a = ap.parse_args(argv)
    cfg = temporal.Config.from_dict(load_params(a.params).get("temporal") or {})
    result = temporal.baseline(a.cache, a.labels, a.out, cfg)
    # the metrics file DVC compares: each baseline's figures on the evaluation split
    write_json(a.metrics, {name: res[a.split] for name, res in result.items() if a.split in res},
               sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
