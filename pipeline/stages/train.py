"""DVC stage `train@<labelset>`: STAN from the cache, early-stopped on val (params: temporal)."""

from __future__ import annotations

import sys

import temporal
from pipeline.params import load_params, stage_parser

PARAMS = ["temporal"]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("train", __doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cfg = temporal.Config.from_dict(load_params(a.params).get("temporal") or {})
    temporal.train(a.cache, a.labels, a.out, cfg, overwrite=True)  # a DVC output: DVC says when it is stale
    return 0


if __name__ == "__main__":
    sys.exit(main())
