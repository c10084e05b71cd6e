"""DVC stage `train@<labelset>`: STAN from the cache, early-stopped on val (params: temporal)."""

from __future__ import annotations

import sys

import temporal
from pipeline.params import init_input, load_params, parse, stage_parser, training_inputs
from pipeline.threads import one_thread

PARAMS = ["temporal"]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("train", __doc__)
    training_inputs(ap)
    init_input(ap)
    ap.add_argument("--out", required=True, help="run folder to write")
    a = parse(ap, argv)
    one_thread()
    cfg = temporal.Config.from_dict(load_params(a.params).get("temporal") or {})
    if a.init is not None:
        cfg = cfg.replace(init=a.init)
    temporal.train(a.cache, a.labels, a.out, cfg, overwrite=True)  # a DVC output: DVC says when it is stale
    return 0


if __name__ == "__main__":
    sys.exit(main())
