"""DVC stage `prepare` of the events benchmark (eventbench/dvc.yaml): write its two-minute videos
and label sets (params: eventbench)."""

from __future__ import annotations

import sys

from pipeline.eventbench import TASKS, EventBenchConfig, make_eventbench, split_of
from pipeline.params import load_params, parse, section, stage_parser

PARAMS = ["eventbench"]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("eventbench", __doc__)
    ap.add_argument("--out", required=True,
                    help="folder for videos/ and labels/")
    a = parse(ap, argv)
    cfg = section(load_params(a.params), "eventbench", EventBenchConfig)
    make_eventbench(a.out, cfg)
    splits = [split_of(g) for g in range(cfg.groups)]
    print(f"eventbench: {cfg.groups} groups x 6 videos of {cfg.seconds} s "
          f"({', '.join(f'{splits.count(s) * 6} {s}' for s in ('train', 'val', 'test', 'unlabelled'))}) "
          f"-> {a.out}; label sets: {', '.join(TASKS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
