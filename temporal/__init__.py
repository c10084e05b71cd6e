"""Stage two: STAN and baselines trained from the feature cache.

    import temporal
    cfg = temporal.as_config(fusion="sum", frames=64)                      # over the defaults
    run = temporal.train("cache/", "labels.csv", "runs/stan", cfg)        # -> Path of the run
    metrics = temporal.evaluate(run, "test")                               # -> dict, writes files
    temporal.predict_videos(run, videos_dir="new/", out="predictions.csv")  # unlabelled videos
    probs = temporal.load_run(run).predict(features, timestamps)           # [T, D] + [T] -> [C]
    ref = temporal.baseline("cache/", "labels.csv", "runs/probe", cfg)     # -> dict
"""

from temporal.baseline import baseline
from temporal.config import Config, ConfigError, as_config, load_config_file
from temporal.labels import LabelError, read_labels
from temporal.model import STAN, MeanPool, build_model
from temporal.predict import predict_videos
from temporal.run import Run, RunError, evaluate, load_run
from temporal.train import train

__all__ = [
    "STAN",
    "Config",
    "ConfigError",
    "LabelError",
    "MeanPool",
    "Run",
    "RunError",
    "as_config",
    "baseline",
    "build_model",
    "evaluate",
    "load_config_file",
    "load_run",
    "predict_videos",
    "read_labels",
    "train",
]
