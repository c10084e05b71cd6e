"""python -m pipeline STAGE ...: the DVC stages and the experiment report (see pipeline/stages.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import stages
from pipeline.params import load_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=stages.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    sub = ap.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("prepare", help="write the demo videos and label sets")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("extract", help="stage one over a videos folder")
    p.add_argument("--videos", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    for name in ("train", "baseline", "efficiency"):
        p = sub.add_parser(name)
        p.add_argument("--cache", type=Path, required=True)
        p.add_argument("--labels", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True)
        if name != "train":
            p.add_argument("--split", default="test")
    sub.choices["baseline"].add_argument("--metrics", type=Path, required=True)
    sub.choices["efficiency"].add_argument("--plot", type=Path, required=True)
    p = sub.add_parser("evaluate")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--predictions", type=Path, required=True)
    p = sub.add_parser("report", help="experiments and their metrics, baseline beside them")
    p.add_argument("--md", action="store_true", help="a Markdown table")
    p.add_argument("--rev", help="experiments derived from this commit (default HEAD)")
    a = ap.parse_args(argv)

    if a.stage == "report":
        from pipeline.report import report

        return report(markdown=a.md, rev=a.rev)
    params = load_params(a.params)
    if a.stage == "prepare":
        stages.prepare(params, a.out)
    elif a.stage == "extract":
        return stages.extract(params, a.videos, a.out)
    elif a.stage == "train":
        stages.train(params, a.cache, a.labels, a.out)
    elif a.stage == "evaluate":
        stages.evaluate(params, a.run, a.split, a.metrics, a.predictions)
    elif a.stage == "baseline":
        stages.baseline(params, a.cache, a.labels, a.out, a.metrics, a.split)
    elif a.stage == "efficiency":
        stages.efficiency(params, a.cache, a.labels, a.out, a.plot, a.split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
