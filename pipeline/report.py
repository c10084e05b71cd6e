"""A table of DVC experiments: the params that differ, STAN's metrics, and the baselines beside them."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

# DVC prefixes a metric with its file only when several files share the name (two label sets do);
# a pipeline in a subfolder (eventbench/dvc.yaml) prefixes its folder
METRIC = re.compile(r"^(?:(?P<pipeline>.+)/)?metrics/(?P<labelset>[^/]+)/"
                    r"(?P<model>stan|baseline)\.json:(?P<key>.+)$")
PLAIN = re.compile(r"^(?P<labelset>)(?P<model>)(?P<key>(?:(?P<base>linear|minirocket|mlp)\.)?[a-z0-9_]+)$")
SHOWN = ("accuracy", "macro_f1", "map", "r2", "mae")


def rows(rev: str | None = None) -> list[dict]:
    import dvc.api
    from dvc.repo import Repo

    return qualify(dvc.api.exp_show(revs=rev), Path(Repo.find_root()))


def qualify(exps: list[dict], root: Path) -> list[dict]:
    """Give every metric its file: DVC leaves a name unprefixed when one file alone has it (`r2` of
    the only regression label set), which would hide whose it is. The files are the workspace's."""
    owner: dict[str, list[str]] = {}
    for path in sorted([*root.glob("metrics/*/*.json"), *root.glob("*/metrics/*/*.json")]):
        with contextlib.suppress(OSError, ValueError):
            for key in metric_keys(json.loads(path.read_text())):
                owner.setdefault(key, []).append(f"{path.relative_to(root).as_posix()}:{key}")
    unique = {k: v[0] for k, v in owner.items() if len(v) == 1}
    return [{unique.get(k, k): v for k, v in e.items()} for e in exps]


def metric_keys(d: dict, prefix: str = "") -> list[str]:
    """A metrics file's names as DVC shows them: nested keys joined by dots (`linear.accuracy`)."""
    out = []
    for k, v in d.items():
        out += metric_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def table(exps: list[dict], pipeline: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: experiment, changed params, then per label set STAN | linear | MiniRocket | MLP.
    `pipeline`: only that folder's pipeline ("eventbench"; "." the top-level one); default all."""
    params = sorted({k for e in exps for k in e if k.startswith(("temporal.", "extract.", "demo."))})
    changed = [p for p in params if len({repr(e.get(p)) for e in exps}) > 1]
    cols: list[tuple[str, str, str]] = []  # (labelset, model column, metric key in exp_show)
    keys = sorted({k for e in exps for k in e if METRIC.match(k)})
    if pipeline is not None:
        keys = [k for k in keys if (METRIC.match(k)["pipeline"] or ".") == pipeline]
    if not keys and pipeline in (None, "."):  # one label set: unprefixed `accuracy`, `linear.accuracy` ...
        keys = sorted({k for e in exps for k in e if PLAIN.match(k) and k.split(".")[-1] in SHOWN})
    for key in keys:
        m = (METRIC.match(key) or PLAIN.match(key)).groupdict()
        name = m["key"].split(".")[-1]
        if name not in SHOWN:
            continue
        if not m["model"]:
            m = {"labelset": "test", "model": "baseline" if m["base"] else "stan", "key": m["key"]}
        labelset = f"{m['pipeline']}/{m['labelset']}" if m.get("pipeline") else m["labelset"]
        if m["model"] == "stan" and "." not in m["key"]:
            cols.append((labelset, f"stan {name}", key))
        elif m["model"] == "baseline" and m["key"].startswith(("linear.", "minirocket.", "mlp.")):
            cols.append((labelset, f"{m['key'].split('.')[0]} {name}", key))
    order = ("stan", "linear", "minirocket", "mlp")
    cols.sort(key=lambda c: (c[0], c[1].split()[1], order.index(c[1].split()[0])))
    header = ["experiment", *changed, *[f"{ls}: {name}" for ls, name, _ in cols]]
    body = []
    for e in exps:
        name = e.get("Experiment") or e.get("rev") or "?"
        if e.get("rev") and e.get("Experiment") and e["rev"] != e["Experiment"]:
            name = f"{e['Experiment']} ({e['rev']})"
        body.append([name, *[_fmt(e.get(p)) for p in changed], *[_fmt(e.get(k)) for _, _, k in cols]])
    return header, body


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)


def render(header: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True))
                     for r in [header, *body])


def report(markdown: bool = False, rev: str | None = None, pipeline: str | None = None) -> int:
    """Experiments derived from `rev` (default HEAD) and the baselines beside them."""
    exps = [e for e in rows(rev) if e.get("State") not in ("Queued", "Failed")]
    header, body = table(exps, pipeline)
    print(render(header, body, markdown))
    return 0
