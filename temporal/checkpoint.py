"""The per-epoch training checkpoint: one safetensors file, replaced atomically after every epoch.

    RUN/checkpoint.safetensors
        model.<name>        the weights after the epoch
        best.<name>         the weights of the best val epoch so far (absent until there is one)
        ema.<name>          the moving average of the weights (optim.ema > 0 only)
        opt.<i>.<name>      AdamW's per-parameter state (step, exp_avg, exp_avg_sq)
        rng.torch           torch's CPU generator (dropout); rng.cuda.<n> for each GPU
        metadata "state"    JSON: epoch, step, history, best, optimizer groups, numpy's generator, ...

Tensors and JSON only (no pickle), so a checkpoint is data, never code. Resuming from it restores
every source of randomness, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from storage.durable import atomic_write

CHECKPOINT = "checkpoint.safetensors"


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    best_state: dict | None, rng: np.random.Generator, state: dict,
                    ema: torch.nn.Module | None = None) -> None:
    """Write everything the loop needs to go on after this epoch; `state` is its JSON part."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    opt_state = opt.state_dict()
    for i, s in opt_state["state"].items():
        tensors.update({f"opt.{i}.{k}": v for k, v in s.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{n}": s for n, s in enumerate(torch.cuda.get_rng_state_all())})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    state = {**state, "optimizer_groups": opt_state["param_groups"], "numpy_rng": rng.bit_generator.state}
    atomic_write(path, save(tensors, metadata={"state": json.dumps(state)}))


def checkpoint_state(path: Path) -> dict:
    """The JSON part of a checkpoint (read without loading its tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["state"])


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    rng: np.random.Generator, ema: torch.nn.Module | None = None) -> tuple[dict, dict | None]:
    """Restore model, optimizer, generators (and `ema`) from `path`; returns (JSON state, best
    weights or None)."""
    state = checkpoint_state(path)
    tensors = load_file(str(path))
    part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    model.load_state_dict(part("model."))
    if ema is not None:
        ema.load_state_dict(part("ema."))
    opt_state: dict = {}
    for k, v in part("opt.").items():
        i, name = k.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state.pop("optimizer_groups")]
    opt.load_state_dict({"state": opt_state, "param_groups": groups})
    rng.bit_generator.state = state.pop("numpy_rng")
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{n}"] for n in range(torch.cuda.device_count()) if f"rng.cuda.{n}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    best = part("best.")
    return state, (best or None)
