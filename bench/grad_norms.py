"""Where the gradient goes: per part of STAN, the task loss's gradient norm, and the group lasso's.

    python bench/grad_norms.py --cache eventbench/cache --labels eventbench/data/labels/count.csv \\
        --set streams=both --set aux_loss=0 --set branch_drop=0 --steps 60

Trains like `temporal train` (AdamW, the same clipping) and prints, every `--every` steps, a JSON
line: the task loss, the total (clipped) gradient norm, the lasso's gradient norm, and the task
gradient's norm in each part (spatial, temporal, cross, events, head). This is how the streams
were found to starve beside the event summary (docs/ablations.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def norm(params) -> float:
    return float(sum(p.grad.norm() ** 2 for p in params if p.grad is not None) ** 0.5)


def main(argv: list[str] | None = None) -> int:
    import temporal
    from temporal.dataset import load_data
    from temporal.loop import fit_without_labels, loss_fn, param_groups, train_batch
    from temporal.model import build_model
    from temporal.train import proximal_step, sparsity, targets_tensor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE over temporal.Config()")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=10)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    over = {k: json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
            for k, _, v in (s.partition("=") for s in a.set)}
    cfg = temporal.as_config(over)
    data = load_data(a.cache, a.labels, cfg, log=lambda *_: None)
    task = data.labels.task
    model = build_model(cfg, data.videos.dim, 1 if task == "regression" else len(data.labels.classes))
    fit_without_labels(model, data.videos, data.train, cfg)
    y_all = targets_tensor(data, range(len(data.labels)), 0.0, 1.0)
    parts = {k: getattr(model, k) for k in ("spatial", "temporal", "cross", "events", "heads", "branch_heads")
             if getattr(model, k, None) is not None}
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(cfg.optim.seed)
    model.train()
    for step in range(a.steps):
        rows = rng.choice(data.train, cfg.optim.batch_size, replace=False)
        x, t, m = train_batch(data.videos, rows, cfg.data, rng, torch.device("cpu"))
        logits, aux = model.outputs(x, t, m)
        y = y_all[torch.from_numpy(rows)]
        loss = loss_fn(task, logits, y)
        extra = sum(loss_fn(task, p, y) for p in aux) * (cfg.loss.aux_loss / max(1, len(aux)))
        opt.zero_grad()
        (loss + extra).backward(retain_graph=True)
        task_norms = {k: round(norm(p.parameters()), 4) for k, p in parts.items()}
        penalty = sparsity(model, cfg)
        opt.zero_grad()
        lasso = 0.0
        if torch.is_tensor(penalty):
            penalty.backward(retain_graph=True)
            lasso = norm(model.parameters())
        opt.zero_grad()
        (loss + extra + penalty).backward()
        total = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf")))
        opt.step()
        proximal_step(model, cfg, cfg.optim.lr)
        if step % a.every == 0 or step == a.steps - 1:
            print(json.dumps({"step": step, "loss": round(loss.item(), 4), "total_grad": round(total, 3),
                              "lasso_grad": round(lasso, 3), "task_grad": task_norms}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
