"""DVC stage `pretrain`: STAN pre-trained on the cache's videos without their labels, every labels
file's test split left out (params: pretrain, and the temporal.* keys that shape STAN and its
optimiser). With `pretrain.epochs: 0` (the default: at 25 % of the labels it hurt, docs/ablations.md)
the run it writes tells `train` to start from a random init, in seconds; `dvc exp run -S
pretrain.epochs=60` switches it on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import temporal
from pipeline.params import load_params, parse, stage_parser
from pipeline.threads import one_thread
from temporal.config import PRETRAIN_OPTIONS
from temporal.labels import test_videos
from temporal.pretrain import pretrain

PARAMS = [f"temporal.{p}" for p in PRETRAIN_OPTIONS if p != "optim.epochs"] + ["pretrain"]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("pretrain", __doc__)
    ap.add_argument("--cache", required=True, help="feature cache folder")
    ap.add_argument("--holdout", type=Path, required=True,
                    help="labels CSV, or folder of them, whose test videos pre-training leaves out")
    ap.add_argument("--out", type=Path, required=True, help="pre-training run folder to write")
    a = parse(ap, argv)
    one_thread()
    params = load_params(a.params)
    cfg = temporal.Config.from_dict(params.get("temporal") or {})
    pre = params.get("pretrain") or {}
    pretrain(a.cache, a.out, cfg, exclude=test_videos(a.holdout), epochs=int(pre.get("epochs", 0)),
             targets=int(pre.get("targets", 64)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
