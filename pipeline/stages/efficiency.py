"""DVC stage `efficiency@<labelset>`: STAN and the linear probe on growing fractions of the train
split, one CSV row each (params: every temporal.* key but labels.train_fraction, which the sweep
sets, and the mean-pool MLP's, which it does not train; and efficiency)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import temporal
from pipeline.params import init_input, load_params, parse, stage_parser, training_inputs
from pipeline.threads import one_thread
from temporal.config import paths

PARAMS = [f"temporal.{p}" for p in paths() if p != "labels.train_fraction" and not p.startswith("meanpool.")]
PARAMS.append("efficiency")


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("efficiency", __doc__)
    training_inputs(ap)
    init_input(ap)
    ap.add_argument("--out", type=Path, required=True,
                    help="folder of the runs, one per fraction and model")
    ap.add_argument("--plot", type=Path, required=True,
                    help="CSV to write: one row per train fraction")
    ap.add_argument("--split", default="test",
                    help="split the rows report (default: test)")
    a = parse(ap, argv)
    one_thread()
    params = load_params(a.params)
    cfg = temporal.Config.from_dict(params.get("temporal") or {})
    if a.init is not None:
        cfg = cfg.replace(init=a.init)
    fractions = sorted(float(f) for f in (params.get("efficiency") or {}).get("train_fractions", [1.0]))
    rows = []
    for frac in fractions:
        sub = cfg.replace(train_fraction=frac)
        run = temporal.train(a.cache, a.labels, a.out / f"stan_{frac:g}", sub, overwrite=True)
        stan = temporal.evaluate(run, a.split)
        probe = temporal.baseline(a.cache, a.labels, a.out / f"probe_{frac:g}", sub, mlp=False)
        probe = probe["linear"][a.split]
        row = {"train_fraction": frac}
        for name, res in (("stan", stan), ("linear", probe)):
            row.update({f"{name}_{k}": v for k, v in res.items() if isinstance(v, float)})
        rows.append(row)
    a.plot.parent.mkdir(parents=True, exist_ok=True)
    with a.plot.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"data efficiency: {len(rows)} fractions -> {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
