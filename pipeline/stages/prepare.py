"""DVC stage `prepare`: write the demo videos and their label sets (params: demo)."""

from __future__ import annotations

import sys

from pipeline.demo import DemoConfig, make_demo
from pipeline.params import load_params, parse, section, stage_parser

PARAMS = ["demo"]


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("prepare", __doc__)
    ap.add_argument("--out", required=True,
                    help="folder for videos/ and labels/")
    a = parse(ap, argv)
    cfg = section(load_params(a.params), "demo", DemoConfig)
    paths = make_demo(a.out, cfg)
    print(f"demo: {cfg.videos} videos of {cfg.min_seconds:g}-{cfg.max_seconds:g} s -> {a.out}; "
          f"labels: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
