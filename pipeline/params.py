"""One loader for `params.yaml`: each stage script reads its section into its own config dataclass."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

import yaml

from storage.console import console_options, setup_console
from storage.settings import check_keys

T = TypeVar("T")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def build(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """`cls(**values)`, refusing keys the dataclass does not have (with a did-you-mean)."""
    values = dict(values or {})
    check_keys(cls, values, f"key(s) in {where}")
    return cls(**values)


def section(params: dict[str, Any], name: str, cls: type[T]) -> T:
    return build(cls, params.get(name), f"params.yaml [{name}]")


def stage_parser(stage: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of a stage script, with `--params` (default params.yaml) and the console
    options (-q, -v, --no-progress); read it with `parse`."""
    ap = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{stage}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"),
                    help="the parameters file (default: params.yaml)")
    console_options(ap)
    return ap


def training_inputs(ap: argparse.ArgumentParser) -> None:
    """--cache and --labels, the inputs of every stage that trains."""
    ap.add_argument("--cache", required=True, help="feature cache folder")
    ap.add_argument("--labels", required=True, help="labels CSV (video_id,label,split)")


def init_input(ap: argparse.ArgumentParser) -> None:
    """--init, for the stages that train STAN after the pretrain stage."""
    ap.add_argument("--init", default=None,
                    help="the pretrain stage's run to start from (instead of temporal.init)")


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The stage's arguments, with logging and progress set up from them."""
    args = ap.parse_args(argv)
    setup_console(args)
    return args
