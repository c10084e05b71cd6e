"""python -m temporal pretrain|train|evaluate|predict|baseline: stage two, from the feature cache.

  pretrain  --cache C --out runs/pre [--holdout L.csv]   self-supervised, on unlabelled videos
  train     --cache C --labels L.csv --out runs/x [--config params.yaml] [--init runs/pre] [--resume]
  evaluate  --run runs/x --split test [--metrics FILE] [--predictions FILE]
  predict   --run runs/x --videos DIR | --cache C [--out predictions.csv]   unlabelled videos
  baseline  --cache C --labels L.csv --out runs/probe [same options as train]

Every field of temporal.Config is an option (clip_len: --clip-len); a --config file
(YAML/JSON, flat or under `temporal:`) sets them too, and flags override the file.
`python -m temporal COMMAND --help` lists the options of one command.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import storage
from storage.console import console_options, say, setup_console
from storage.settings import field_types
from temporal.baseline import BASELINE_OPTIONS
from temporal.config import CHOICES, Config, ConfigError, as_config, load_config_file, option_help
from temporal.labels import LabelError
from temporal.run import EVAL_OVERRIDES, RunError

_METAVAR = {int: "N", float: "X", str: "NAME"}


def _add_config_options(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None,
                        as_trained: bool = False) -> None:
    """One option per temporal.Config field (`only`: these fields); `as_trained`: their default is
    the saved run's value."""
    g = p.add_argument_group("model and training options (temporal.Config)")
    defaults = Config()
    types = field_types(Config)
    described = option_help()
    for f in fields(Config):
        if only is not None and f.name not in only:
            continue
        flags = [f"--{f.name.replace('_', '-')}"]
        shown = "default: as trained" if as_trained else f"default {getattr(defaults, f.name)!r}"
        shown = f"{described[f.name]} ({shown})" if f.name in described else shown
        kw: dict = {"dest": f.name, "default": None, "help": shown.replace("%", "%%")}
        kind = types[f.name][0]
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = kind
            kw["metavar"] = _METAVAR[kind]
            if f.name in CHOICES:
                kw["choices"] = CHOICES[f.name]
                kw["metavar"] = "{" + ",".join(CHOICES[f.name]) + "}"
        g.add_argument(*flags, **kw)


def _overrides(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(Config)
            if getattr(args, f.name, None) is not None}


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
    p.add_argument("--holdout", type=Path, metavar="LABELS.csv",
                   help="leave out the videos of this labels file's test split (labels are not read)")
    p.add_argument("--targets", type=int, default=64, help="principal components to reconstruct (default 64)")
    p.add_argument("--config", type=Path, help="YAML/JSON of options (flat or under `temporal:`)")
    _add_config_options(p)

    p = sub.add_parser("evaluate", help="metrics + per-video predictions of a saved run")
    p.add_argument("--run", type=Path, required=True, help="a trained run folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split to evaluate (default: test)")
    p.add_argument("--metrics", type=Path, help="metrics JSON (default RUN/metrics_SPLIT.json)")
    p.add_argument("--predictions", type=Path, help="predictions CSV (default RUN/predictions_SPLIT.csv)")
    p.add_argument("--cache", help="default: the cache the run was trained on (folder or URL)")
    p.add_argument("--labels", type=Path, help="default: the labels the run was trained on")
    _add_config_options(p, only=EVAL_OVERRIDES, as_trained=True)

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
    _add_config_options(p, only=EVAL_OVERRIDES, as_trained=True)

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

    for p in sub.choices.values():
        console_options(p)
    args = ap.parse_args(argv)
    setup_console(args)
    try:
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
            from temporal.labels import read_labels
            from temporal.pretrain import pretrain

            held = set()
            if args.holdout:
                lab = read_labels(args.holdout)
                held = {lab.ids[i] for i in lab.rows("test")}
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
