"""RunMeta: a training run's config.json, what its weights need to be read and where they came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

RUN_FORMAT = 1  # of config.json; a run of another format is refused by name, not misread


@dataclass
class RunMeta:
    task: str  # single | multi | regression
    classes: list[str]  # class names, in the order of the scores (empty for regression)
    in_dim: int  # the cache's feature width
    out_dim: int  # scores per video
    config: dict  # the training options, nested as temporal.Config.to_dict()
    fingerprint: dict  # the cache's: a cache with another one holds features that mean something else
    cache: str  # absolute path or fsspec URL
    labels: str
    cache_from_run: str | None = None  # the same, relative to the run folder (a moved tree); None for URLs
    labels_from_run: str | None = None
    target_mean: float = 0.0  # regression: targets are standardised for training, scores scaled back
    target_std: float = 1.0
    provenance: dict = field(default_factory=dict)  # where the backbone's weights came from (predict)
    versions: dict = field(default_factory=dict)
    best_epoch: int | None = None  # set when training ends, as is the output that predicts
    output: str | None = None
    format: int = RUN_FORMAT

    @classmethod
    def from_json(cls, d: dict) -> RunMeta:
        """From a config.json's dict; keys this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def label_units(self, scores: np.ndarray) -> np.ndarray:
        """Scores in the label's unit: regression values un-standardised, probabilities as they are."""
        return scores if self.task != "regression" else scores * self.target_std + self.target_mean
