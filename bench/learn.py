"""Learning levers, measured: every (task, variant, seed, train fraction) trained and scored on test.

    python bench/learn.py --cache eventbench/cache --labels eventbench/data/labels --tasks order,where \\
        --variant defaults: --variant 'full:frames=128' --variant 'pre:streams=both,pretrain_epochs=100' \\
        --seeds 0,1,2 --fractions 0.25,1.0 --out runs/learn --jobs 2

A variant is NAME:KEY=VALUE,... over `temporal.Config()` (the CLI defaults); `base=NAME` starts from
another variant, `pretrain_epochs=N` pre-trains on the cache first (once per architecture and seed,
without the test split's videos), `linear` names the mean-pool linear probe, `minirocket` the
MiniRocket probe (temporal/baseline.py). Results are appended
to OUT/results.jsonl (finished ones are skipped on a re-run); the last line printed is a JSON
summary: mean and std over seeds of each task's main test metric (accuracy, or r2).

A sweep: `--grid KEY=V1/V2/...` (repeatable) adds one variant per combination of the values, on top
of `--grid-base NAME`; `--choose` then ranks every variant run by its val score (the main val
metric averaged over seeds, then over tasks), per train fraction, and prints the winner with its
test figures. The val split chooses; the test split only reports.

    python bench/learn.py --cache eb/cache --labels eb/labels --tasks order,count,where \
        --grid lr=5e-4/1e-3/2e-3 --grid dropout=0.1/0.3 --seeds 0,1,2 --fractions 0.25,1.0 \
        --choose --out runs/sweep --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

MAIN = {"single": "accuracy", "regression": "r2", "multi": "map"}


def parse_variant(text: str, known: dict[str, dict]) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    over: dict = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        over[k.strip()] = parse_value(v)
    if "base" in over:
        over = {**known[over.pop("base")], **over}
    return name, over


def grid_variants(grid: list[str], base: dict) -> dict[str, dict]:
    """One variant per combination of `KEY=V1/V2/...` values, each over `base`, named by its values."""
    axes = []
    for text in grid:
        key, _, values = text.partition("=")
        axes.append([(key.strip(), parse_value(v)) for v in values.split("/")])
    return {" ".join(f"{k}={v}" for k, v in combo): {**base, **dict(combo)}
            for combo in itertools.product(*axes)}


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def choose(results: list[dict], tasks: dict[str, str], variants: list[str]) -> dict[str, dict]:
    """The variant with the best val score, per train fraction and over all of them ("all"): the
    main val metric averaged over seeds, then over tasks (and fractions); a variant missing a task's
    val metric ranks last."""
    fracs = sorted({f"{r['fraction']:g}" for r in results}, key=float)
    score: dict[tuple[str, str], float] = {}
    for frac in fracs:
        for v in variants:
            per_task = []
            for t, kind in tasks.items():
                vals = [(r.get("val") or {}).get(MAIN[kind]) for r in results
                        if r["variant"] == v and r["task"] == t and f"{r['fraction']:g}" == frac]
                vals = [x for x in vals if x is not None]
                per_task.append(float(np.mean(vals)) if vals else -np.inf)
            score[frac, v] = float(np.mean(per_task))
    best: dict[str, dict] = {}
    for frac in [*fracs, "all"]:
        rows = sorted(((float(np.mean([score[f, v] for f in fracs])) if frac == "all" else score[frac, v], v)
                       for v in variants), reverse=True)
        best[frac] = {"variant": rows[0][1], "val_score": round(rows[0][0], 4),
                      "ranking": [[v, round(x, 4)] for x, v in rows]}
    return best


def _quiet(*_a, **_k) -> None:
    pass


def run_one(job: dict) -> dict:
    import torch

    import temporal
    from temporal.config import PRETRAIN_OPTIONS
    from temporal.labels import read_labels
    from temporal.pretrain import pretrain

    torch.set_num_threads(1)
    over = dict(job["overrides"])
    labels = Path(job["labels"]) / f"{job['task']}.csv"
    out = Path(job["out"]) / "runs" / job["task"] / job["variant"] / f"s{job['seed']}_f{job['fraction']:g}"
    cfg = temporal.as_config({k: v for k, v in over.items()
                              if k not in ("pretrain_epochs", "linear", "minirocket")})
    cfg = cfg.replace(seed=job["seed"], train_fraction=job["fraction"])
    res = {k: job[k] for k in ("task", "variant", "seed", "fraction")}
    probe = "linear" if over.get("linear") else "minirocket" if over.get("minirocket") else None
    if probe:
        r = temporal.baseline(job["cache"], labels, out, cfg, mlp=False, log=_quiet, probes=(probe,))[probe]
        return {**res, "test": r["test"], "val": r.get("val")}
    if over.get("pretrain_epochs"):
        arch = {p: cfg.get(p) for p in PRETRAIN_OPTIONS if p != "device"}
        arch["epochs"] = over["pretrain_epochs"]
        key = hashlib.sha1(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:10]
        pre = Path(job["out"]) / "pretrain" / key
        if not (pre / "model.safetensors").exists():
            lab = read_labels(labels)
            held = {lab.ids[i] for i in lab.rows("test")}
            pretrain(job["cache"], pre, cfg.replace(epochs=over["pretrain_epochs"]), exclude=held, log=_quiet)
        cfg = cfg.replace(init=str(pre))
    run = temporal.train(job["cache"], labels, out, cfg, log=_quiet, overwrite=True)  # not in results.jsonl
    summary = json.loads((run / "summary.json").read_text())
    test = temporal.evaluate(run, "test", log=_quiet)
    return {**res, "test": test, "val": summary.get("val"), "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs_run"], "train_seconds": summary["train_seconds"]}


def summarise(results: list[dict], tasks: dict[str, str]) -> dict:
    table: dict = {}
    for r in results:
        metric = MAIN[tasks[r["task"]]]
        v = r["test"].get(metric)
        cell = table.setdefault(r["task"], {}).setdefault(r["variant"], {})
        cell.setdefault(f"{r['fraction']:g}", []).append(np.nan if v is None else v)

    def stats(x: list[float]) -> dict:
        return {"mean": round(float(np.nanmean(x)), 4), "std": round(float(np.nanstd(x)), 4), "n": len(x)}

    return {t: {v: {f: stats(x) for f, x in fr.items()} for v, fr in vs.items()} for t, vs in table.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--labels", required=True, help="folder of TASK.csv label files")
    ap.add_argument("--tasks", default="order,count,where,content")
    ap.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default="1.0")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--only", help="run only these variants (comma-separated); the others serve as bases")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1/V2/... (repeatable): a sweep")
    ap.add_argument("--grid-base", help="the variant the grid starts from (default: the CLI defaults)")
    ap.add_argument("--choose", action="store_true", help="print the variant with the best val score")
    ap.add_argument("--md", action="store_true", help="also print the summary as a Markdown table")
    a = ap.parse_args(argv)

    from temporal.labels import read_labels

    known: dict[str, dict] = {}
    for text in a.variant or ([] if a.grid else ["defaults:"]):
        name, over = parse_variant(text, known)
        known[name] = over
    swept = grid_variants(a.grid, known[a.grid_base] if a.grid_base else {}) if a.grid else {}
    known.update(swept)
    tasks = {t: read_labels(Path(a.labels) / f"{t}.csv").task for t in a.tasks.split(",")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    done = [json.loads(line) for line in path.open()] if path.exists() else []
    have = {(r["task"], r["variant"], r["seed"], r["fraction"]) for r in done}
    run = a.only.split(",") if a.only else list(known)
    grid = [(t, v, int(s), float(f)) for f in a.fractions.split(",") for s in a.seeds.split(",")
            for v in run for t in tasks]
    jobs = [{"cache": a.cache, "labels": a.labels, "out": str(out), "task": t, "variant": v,
             "overrides": known[v], "seed": s, "fraction": f}
            for t, v, s, f in grid if (t, v, s, f) not in have]
    print(f"{len(jobs)} runs to do, {len(have)} already done", file=sys.stderr)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for res in pool.map(run_one, jobs):
            done.append(res)
            with path.open("a") as fh:
                fh.write(json.dumps(res) + "\n")
            metric = MAIN[tasks[res["task"]]]
            print(f"{res['task']:8s} {res['variant']:14s} seed {res['seed']} frac {res['fraction']:g}: "
                  f"{metric} {res['test'].get(metric)}", file=sys.stderr, flush=True)
    wanted = {(t, v) for t in tasks for v in run}
    summary = summarise([r for r in done if (r["task"], r["variant"]) in wanted], tasks)
    if a.md:
        print(markdown(summary, tasks, run))
    if a.choose:
        chosen = choose([r for r in done if r["variant"] in run and r["task"] in tasks], tasks, run)
        for frac, c in chosen.items():
            where = "over every fraction" if frac == "all" else f"at {float(frac):.0%} of the labels"
            test = {f"{t}@{f}": x for t in tasks for f, x in summary[t][c["variant"]].items()
                    if frac in ("all", f)}
            print(f"chosen on val {where}: {c['variant']} (val score {c['val_score']}); test: " + ", ".join(
                f"{k} {x['mean']:.3f} ± {x['std']:.3f}" for k, x in test.items()), file=sys.stderr)
        summary = {"results": summary, "chosen": chosen}
    print(json.dumps(summary))
    return 0


def markdown(summary: dict, tasks: dict[str, str], variants: list[str]) -> str:
    """One row per variant and train fraction, one column per task: mean ± std (seeds)."""
    fracs = sorted({f for t in summary.values() for v in t.values() for f in v}, key=float, reverse=True)
    head = [f"{t} ({MAIN[k]})" for t, k in tasks.items()]
    lines = ["| variant | labels | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for v in variants:
        for f in fracs:
            cells = []
            for t in tasks:
                c = summary.get(t, {}).get(v, {}).get(f)
                cells.append("–" if c is None else f"{c['mean']:.3f} ± {c['std']:.3f} (n={c['n']})")
            if any(c != "–" for c in cells):
                lines.append(f"| {v} | {float(f):.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
