"""DVC stage `pretrain`: self-supervised pre-training of STAN on the cache's unlabelled videos,
leaving out the test split of a labels file (params: temporal architecture and optimisation keys,
pretrain). `train` starts from it when `temporal.init` names its output."""

from __future__ import annotations

import sys

import temporal
from pipeline.params import load_params, stage_parser
from temporal.labels import read_labels
from temporal.pretrain import pretrain

PARAMS = ["temporal", "pretrain"]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("pretrain", __doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--holdout", required=True, help="labels CSV whose test split is left out")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    params = load_params(a.params)
    pre = params.get("pretrain") or {}
    cfg = temporal.Config.from_dict({**(params.get("temporal") or {}), "init": ""})
    cfg = cfg.replace(epochs=int(pre.get("epochs", cfg.epochs)))
    lab = read_labels(a.holdout)
    held = {lab.ids[i] for i in lab.rows("test")}
    pretrain(a.cache, a.out, cfg, exclude=held, targets=int(pre.get("targets", 64)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
