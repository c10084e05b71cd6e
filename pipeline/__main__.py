"""python -m pipeline report: DVC experiments and their metrics, the baselines beside STAN.

The DVC stages are scripts of their own: `python -m pipeline.stages.<stage> --help`.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="experiments and their metrics, baseline beside them")
    p.add_argument("--md", action="store_true", help="a Markdown table")
    p.add_argument("--rev", help="experiments derived from this commit (default HEAD)")
    a = ap.parse_args(argv)
    from pipeline.report import report

    return report(markdown=a.md, rev=a.rev)


if __name__ == "__main__":
    sys.exit(main())
