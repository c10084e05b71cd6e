"""How much one content-agnostic number says: per video, the highest `comeback` of its frames.

    python bench/comeback.py --cache tb/cache --labels tb/labels/repeat.csv

Samples each labelled video as training does (`frames` frames), computes its frames' recurrence
(temporal.model.recurrence) and prints a JSON line: the ROC AUC of the video's highest comeback
(later) for the label's second class, and its quartiles per class. On the time benchmark's
`repeat` (a novel shot once or twice) this is how the streams' failure was found to be one of
reading, not of signal (docs/ablations.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score

    import temporal
    from temporal.dataset import load_data
    from temporal.loop import train_batch
    from temporal.model import recurrence

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--labels", required=True, help="a two-class labels CSV")
    a = ap.parse_args(argv)
    cfg = temporal.as_config({})
    data = load_data(a.cache, a.labels, cfg, log=lambda *_: None)
    if len(data.labels.classes) != 2:
        raise SystemExit(f"{a.labels}: {len(data.labels.classes)} classes, this reads two")
    rng = np.random.default_rng(0)
    rows, top = list(range(len(data.labels))), []
    for i in range(0, len(rows), 16):
        x, t, m = train_batch(data.videos, rows[i:i + 16], cfg.data, rng, torch.device("cpu"))
        top.append(recurrence(x.float(), t, m)[..., -2].amax(1))
    score, y = torch.cat(top).numpy(), np.array(data.labels.targets)
    print(json.dumps({"labels": a.labels, "videos": len(y), "positive": data.labels.classes[1],
                      "auc": round(float(roc_auc_score(y, score)), 4),
                      **{c: np.percentile(score[y == k], [25, 50, 75]).round(3).tolist()
                         for k, c in enumerate(data.labels.classes)}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
