"""python -m pipeline COMMAND: the DVC stages by name, and `report` of the experiments.

Each stage is also a script of its own, the form dvc.yaml runs: `python -m pipeline.stages.STAGE`
takes the same arguments as `python -m pipeline STAGE`. `python -m pipeline STAGE --help` lists them.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

from storage.console import console_options, setup_console

STAGES = ("prepare", "extract", "train", "evaluate", "baseline", "efficiency", "eventbench")


def stage_summary(stage: str) -> str:
    """The first paragraph of a stage script's docstring (read, not imported: --help stays fast)."""
    source = (Path(__file__).parent / "stages" / f"{stage}.py").read_text()
    doc = ast.get_docstring(ast.parse(source)) or ""
    return " ".join(doc.split("\n\n")[0].split())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in STAGES:  # the stage script parses (and documents) its own arguments
        return importlib.import_module(f"pipeline.stages.{argv[0]}").main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        sub.add_parser(stage, help=stage_summary(stage))
    p = sub.add_parser("report", help="experiments and their metrics, baseline beside them",
                       description="A table of the DVC experiments derived from a commit and their "
                                   "metrics, with the baselines' figures beside STAN's.")
    p.add_argument("--md", action="store_true", help="a Markdown table")
    p.add_argument("--rev", help="experiments derived from this commit (default HEAD)")
    p.add_argument("--pipeline", help="only this folder's pipeline's metrics (eventbench; . the demo's)")
    console_options(p)
    a = ap.parse_args(argv)
    setup_console(a)
    from pipeline.report import report

    return report(markdown=a.md, rev=a.rev, pipeline=a.pipeline)


if __name__ == "__main__":
    sys.exit(main())
