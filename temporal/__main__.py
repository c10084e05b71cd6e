"""python -m temporal pretrain|train|evaluate|predict|baseline|defaults: stage two, from the feature cache.

  pretrain  --cache C --out runs/pre [--holdout L.csv]   self-supervised, on unlabelled videos
  train     --cache C --labels L.csv --out runs/x [--config params.yaml] [--init runs/pre] [--resume]
  evaluate  --run runs/x --split test [--metrics FILE] [--predictions FILE]
  predict   --run runs/x --videos DIR | --cache C [--out predictions.csv]   unlabelled videos
  baseline  --cache C --labels L.csv --out runs/probe [the options it reads]
  defaults                                              params.yaml's temporal section, every default

Every temporal option is a flag, by its flat name (stan.clip_len: --clip-len, eval.mode:
--eval-mode); a --config file (YAML/JSON: nested like params.yaml, or flat; at the top or under
`temporal:`) sets them too, and flags override the file.
`python -m temporal COMMAND --help` lists the options of one command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import storage
from storage.console import console_options, say, setup_console
from storage.settings import field_types
from temporal.config import (
    BASELINE_OPTIONS,
    CHOICES,
    FLAT,
    PRETRAIN_OPTIONS,
    SECTIONS,
    Config,
    ConfigError,
    as_config,
    defaults_yaml,
    flat_name,
    load_config_file,
    option_help,
    paths,
)
from temporal.labels import LabelError
from temporal.run import EVAL_OVERRIDES, RunError

_METAVAR = {int: "N", float: "X", str: "NAME"}


def _add_config_options(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None,
                        as_trained: bool = False) -> None:
    """One flag per temporal option (`only`: these dotted paths), grouped by the part of the
    options they belong to; `as_trained`: their default is the saved run's value."""
    defaults, described = Config(), option_help()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path in paths():
        if only is not None and path not in only:
            continue
        part, _, key = path.rpartition(".")
        if part not in groups:
            groups[part] = p.add_argument_group(f"temporal.{part} options" if part else "temporal options")
        shown = "default: as trained" if as_trained else f"default {defaults.get(path)!r}"
        shown = f"{described[path]} ({shown})" if path in described else shown
        name = flat_name(path)
        kw: dict = {"dest": name, "default": None, "help": shown.replace("%", "%%")}
        kind = field_types(SECTIONS[part] if part else Config)[key][0]
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = kind
            kw["metavar"] = _METAVAR[kind]
            if path in CHOICES:
                kw["choices"] = CHOICES[path]
                kw["metavar"] = "{" + ",".join(CHOICES[path]) + "}"
        groups[part].add_argument(f"--{name.replace('_', '-')}", **kw)


def _overrides(args: argparse.Namespace) -> dict:
    """The flags given, by flat name."""
    return {flat_name(p): getattr(args, flat_name(p)) for p in paths()
            if getattr(args, flat_name(p), None) is not None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m temporal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train STAN (or the mean-pool MLP) from the cache")
    p.add_argument("--cache", required=True, help="feature cache: a folder or an fsspec URL")
    p.add_argument("--labels", type=Path, required=True, help="CSV video_id,label,split")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    p.add_argument("--config", type=Path, help="YAML/JSON of options (flat or under `temporal:`)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last epoch (same options)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or interrupted run in --out")
    _add_config_options(p)

    p = sub.add_parser("pretrain", help="self-supervised pre-training on the unlabelled cache")
    p.add_argument("--cache", required=True, help="feature cache: a folder or an fsspec URL")
    p.add_argument("--out", type=Path, required=True, help="run directory to write (train --init reads it)")
    p.add_argument("--holdout", type=Path, metavar="LABELS",
                   help="leave out the test split's videos of this labels CSV, or of every CSV in this "
                        "folder (labels are not read)")
    p.add_argument("--targets", type=int, default=64, help="principal components to reconstruct (default 64)")
    p.add_argument("--config", type=Path, help="YAML/JSON of options (flat or under `temporal:`)")
    _add_config_options(p, only=PRETRAIN_OPTIONS)

    p = sub.add_parser("evaluate", help="metrics + per-video predictions of a saved run")
    p.add_argument("--run", type=Path, required=True, help="a trained run folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split to evaluate (default: test)")
    p.add_argument("--metrics", type=Path, help="metrics JSON (default RUN/metrics_SPLIT.json)")
    p.add_argument("--predictions", type=Path, help="predictions CSV (default RUN/predictions_SPLIT.csv)")
    p.add_argument("--cache", help="default: the cache the run was trained on (folder or URL)")
    p.add_argument("--labels", type=Path, help="default: the labels the run was trained on")
    _add_config_options(p, only=tuple(FLAT[n] for n in EVAL_OVERRIDES), as_trained=True)

    p = sub.add_parser("predict", help="predictions of a saved run on unlabelled videos",
                       description="Write a CSV of video_id, predicted label(s) (or value, for "
                       "regression) and one probability column per class. --videos extracts the "
                       "folder's videos first, with the backbone, weights and sampling the run's "
                       "cache was made with (videos already in --cache-out are reused).")
    p.add_argument("--run", type=Path, required=True, help="a trained run folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", type=Path, metavar="DIR|LIST",
                     help="folder searched recursively for videos, or a text file listing them")
    src.add_argument("--cache", help="an existing cache made like the run's (folder or URL)")
    p.add_argument("--cache-out", type=Path, metavar="DIR",
                   help="cache to extract --videos into (default RUN/predict-cache/<folder>-<hash>)")
    p.add_argument("--weights", metavar="FILE",
                   help="backbone weights file, if the one recorded at extraction has moved")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"),
                   help="predictions CSV (default predictions.csv)")
    _add_config_options(p, only=tuple(FLAT[n] for n in EVAL_OVERRIDES), as_trained=True)

    p = sub.add_parser("baseline", help="mean-pool + scikit-learn linear model, and a mean-pool MLP",
                       description="The reference figures beside STAN: each video's features averaged, "
                                   "then a linear model (and a small MLP); lists only the options they read.")
    p.add_argument("--cache", required=True, help="feature cache: a folder or an fsspec URL")
    p.add_argument("--labels", type=Path, required=True, help="CSV video_id,label,split")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json, predictions and OUT/mlp")
    p.add_argument("--config", type=Path, help="YAML/JSON of options (flat or under `temporal:`)")
    p.add_argument("--mlp", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the mean-pool MLP into OUT/mlp (default: yes)")
    _add_config_options(p, only=BASELINE_OPTIONS)

    sub.add_parser("defaults", help="print the temporal section of params.yaml with every default")

    for p in sub.choices.values():
        console_options(p)
    args = ap.parse_args(argv)
    setup_console(args)
    try:
        if args.cmd == "defaults":
            print(defaults_yaml(), end="")
            return 0
        if args.cmd == "evaluate":
            ov = {k: v for k, v in _overrides(args).items() if k in EVAL_OVERRIDES}
            from temporal.run import evaluate

            evaluate(args.run, args.split, args.metrics, args.predictions, args.cache, args.labels, log=say,
                     **ov)
            return 0
        if args.cmd == "predict":
            ov = {k: v for k, v in _overrides(args).items() if k in EVAL_OVERRIDES}
            from temporal.predict import predict_videos

            predict_videos(args.run, args.videos, args.cache, args.out, args.cache_out, args.weights,
                           log=say, **ov)
            return 0
        base = load_config_file(args.config) if args.config else {}
        cfg = as_config(base, **_overrides(args))
        if args.cmd == "train":
            from temporal.train import train

            train(args.cache, args.labels, args.out, cfg, resume=args.resume, overwrite=args.overwrite,
                  log=say)
        elif args.cmd == "pretrain":
            from temporal.labels import test_videos
            from temporal.pretrain import pretrain

            held = test_videos(args.holdout) if args.holdout else set()
            pretrain(args.cache, args.out, cfg, exclude=held, targets=args.targets, log=say)
        else:
            from temporal.baseline import baseline

            baseline(args.cache, args.labels, args.out, cfg, mlp=args.mlp, log=say)
    except (ConfigError, LabelError, RunError, storage.CacheError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
