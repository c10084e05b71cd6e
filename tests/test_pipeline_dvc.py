"""dvc.yaml agrees with the stage scripts; the real `dvc repro` on a tiny demo, in a temporary copy."""

import ast
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.report import metric_keys
from tests.testing import REPO

TINY = {
    "demo": {"videos": 24, "min_seconds": 3, "max_seconds": 5, "fps": 5, "width": 64, "height": 48},
    "extract": {"batch_size": 16},
    "temporal": {"stan": {"width": 32, "attention_heads": 2}, "meanpool": {"hidden": 32},
                 "data": {"frames": 8}, "optim": {"epochs": 2, "batch_size": 8}, "eval": {"views": 1}},
    "efficiency": {"train_fractions": [0.5, 1.0]},
}


def stage_scripts() -> dict[str, Path]:
    return {p.stem: p for p in (REPO / "pipeline" / "stages").glob("*.py") if p.stem != "__init__"}


def imported_modules(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
    return mods


@pytest.mark.parametrize("pipeline", ["dvc.yaml", "eventbench/dvc.yaml"])
def test_each_stage_depends_on_its_own_script_and_exactly_the_params_it_reads(pipeline):
    """Both pipelines: the demo's, and the events benchmark's (its paths one folder down, the
    project's params.yaml read as ../params.yaml, its prepare stage the eventbench script)."""
    stages = yaml.safe_load((REPO / pipeline).read_text())["stages"]
    up = "../" if "/" in pipeline else ""
    scripts = stage_scripts()
    script_of = {name: "eventbench" if up and name == "prepare" else name for name in stages}
    if not up:
        assert set(stages) == set(scripts) - {"eventbench"}  # the events benchmark's own prepare
    for name, stage in stages.items():
        stage, script = stage.get("do", stage), script_of[name]
        deps = set(stage["deps"])
        own = f"{up}pipeline/stages/{script}.py"
        assert stage["cmd"].startswith(f"python -m pipeline.stages.{script} "), name
        assert own in deps and not {f"{up}pipeline/stages/{s}.py" for s in scripts} - {own} & deps, name
        for mod in imported_modules(scripts[script]):  # what the script imports is a dependency
            top = mod.split(".")[0]
            if top == "pipeline":
                assert f"{up}{mod.replace('.', '/')}.py" in deps, (name, mod)
            elif top in ("extract", "temporal", "storage"):
                assert f"{up}{top}" in deps, (name, mod)
        if {f"{up}extract", f"{up}temporal"} & deps:
            assert f"{up}storage" in deps, name  # both stages import it
        params = stage.get("params", [])
        if up and params and script != "eventbench":  # the project's params, per key as in the demo's
            assert len(params) == 1 and list(params[0]) == ["../params.yaml"], name
            params = params[0]["../params.yaml"]
        module = importlib.import_module(f"pipeline.stages.{script}")
        assert [str(p) for p in params] == module.PARAMS, name


def test_stage_params_follow_the_config_classes():
    """A new config field is a dependency of every stage that reads its section, unless excluded."""
    from dataclasses import fields

    from extract import ExtractConfig
    from pipeline.stages import baseline, efficiency, extract
    from temporal.config import paths

    temporal = {f"temporal.{p}" for p in paths()}
    assert set(extract.PARAMS) | {f"extract.{n}" for n in extract.NOT_FEATURES} == \
        {f"extract.{f.name}" for f in fields(ExtractConfig)}
    # the baselines read every part but STAN's (a STAN switch does not re-run them) and init
    parts = ("meanpool", "data", "labels", "eval", "optim", "device")
    assert set(baseline.PARAMS) == {p for p in temporal if p.split(".")[1] in parts}
    assert not {p for p in baseline.PARAMS if p.startswith(("temporal.stan.", "temporal.loss."))}
    meanpool = {p for p in temporal if p.startswith("temporal.meanpool.")}
    assert set(efficiency.PARAMS) == temporal - {"temporal.labels.train_fraction"} - meanpool | {"efficiency"}


def flat_keys(obj: dict) -> set[str]:
    return set(metric_keys(obj))


def test_metrics_files_hold_metrics_only_and_run_info_goes_beside_them(tmp_path):
    """evaluate and baseline on a tiny cache: timing and counts go to the run-info file."""
    from pipeline.stages import baseline, evaluate, train
    from temporal.synth import class_task

    cache, labels = class_task(tmp_path, videos=24, classes=2, lengths=(5, 20))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"temporal": {"dim": 16, "heads": 2, "frames": 8, "epochs": 2,
                                                   "eval_views": 1, "device": "cpu"}}))
    threads = torch.get_num_threads()
    try:
        assert train.main(["--params", str(params), "--cache", str(cache), "--labels", str(labels),
                           "--out", str(tmp_path / "run")]) == 0
        assert torch.get_num_threads() == 1  # stage two's results do not depend on the core count
    finally:
        torch.set_num_threads(threads)
    assert evaluate.main(["--run", str(tmp_path / "run"), "--metrics", str(tmp_path / "m" / "stan.json"),
                          "--info", str(tmp_path / "i" / "stan.json"),
                          "--predictions", str(tmp_path / "p.csv")]) == 0
    assert baseline.main(["--params", str(params), "--cache", str(cache), "--labels", str(labels),
                          "--out", str(tmp_path / "base"), "--metrics", str(tmp_path / "m" / "baseline.json"),
                          "--info", str(tmp_path / "i" / "baseline.json")]) == 0
    torch.set_num_threads(threads)
    stan = json.loads((tmp_path / "m" / "stan.json").read_text())
    base = json.loads((tmp_path / "m" / "baseline.json").read_text())
    assert set(stan) == {"accuracy", "loss", "macro_f1"}
    assert flat_keys(base) == {f"{m}.{k}" for m in ("linear", "minirocket", "mlp")
                               for k in ("accuracy", "loss", "macro_f1")}
    info = json.loads((tmp_path / "i" / "stan.json").read_text())
    assert info["split"] == "test" and info["videos"] == 6
    assert info["training"]["epochs_run"] == 2 and info["training"]["train_seconds"] > 0
    assert "val" not in info["training"]  # val metrics stay in the run directory
    base_info = json.loads((tmp_path / "i" / "baseline.json").read_text())
    assert base_info["linear"] == {"videos": 6} and base_info["mlp"] == {"split": "test", "videos": 6}
    assert base_info["mlp_training"]["epochs_run"] == 2


def sh(*cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def git_commit(message: str, cwd: Path) -> None:
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=cwd)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message, cwd=cwd)


@pytest.fixture
def project(tmp_path):
    """A fresh git repo holding this checkout's files, with tiny params."""
    tmp_path = tmp_path / "project"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if (REPO / f).is_file():
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, tmp_path / f)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for section, values in TINY.items():
        for key, value in values.items():  # one level deeper where the section has parts (temporal)
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", cwd=tmp_path)
    git_commit("tiny", tmp_path)
    return tmp_path


def dvc(*args, cwd):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_then_has_nothing_to_do(project):
    out = dvc("repro", cwd=project)
    stages = ("prepare", "extract", "train@order", "evaluate@content", "baseline@order", "efficiency@content")
    for stage in stages:
        assert f"Running stage '{stage}'" in out
    for labelset in ("order", "content"):
        stan = json.loads((project / "metrics" / labelset / "stan.json").read_text())
        base = json.loads((project / "metrics" / labelset / "baseline.json").read_text())
        assert 0 <= stan["accuracy"] <= 1
        assert set(base) == {"linear", "minirocket", "mlp"} and 0 <= base["linear"]["accuracy"] <= 1
        predictions = (project / "plots" / labelset / "predictions.csv").read_text()
        assert predictions.startswith("video_id,actual,predicted")
    # the metrics files hold metrics only: timing and counts are in runinfo/, which DVC does not compare
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=project,
                           capture_output=True, text=True, timeout=300).stdout  # stderr: eventbench/ not run
    files = {f: d["data"] for rev in json.loads(shown).values() for f, d in rev["data"].items()
             if f.startswith("metrics/")}
    assert len(files) == 4 and {k.split(".")[-1] for d in files.values() for k in flat_keys(d)} \
        == {"accuracy", "loss", "macro_f1"}
    for labelset in ("order", "content"):
        info = json.loads((project / "runinfo" / labelset / "stan.json").read_text())
        assert info["split"] == "test" and info["training"]["train_seconds"] > 0
        base = json.loads((project / "runinfo" / labelset / "baseline.json").read_text())
        assert base["mlp_training"]["train_seconds"] > 0
    again = dvc("repro", cwd=project)
    assert "Running stage" not in again and "up to date" in again

    # a fresh clone of the committed results reproduces them exactly, on one core as on two:
    # the same video bytes, and training and metrics that do not depend on the thread count
    git_commit("results", project)
    clone = project.parent / "clone"
    sh("git", "clone", "-q", str(project), str(clone), cwd=project.parent)
    sh("taskset", "-c", "0", sys.executable, "-m", "dvc", "repro", cwd=clone)
    lock, fresh = (yaml.safe_load((p / "dvc.lock").read_text())["stages"] for p in (project, clone))
    assert fresh["prepare"]["outs"] == lock["prepare"]["outs"]  # the demo videos, byte for byte
    for labelset in ("order", "content"):
        for f in (f"metrics/{labelset}/stan.json", f"metrics/{labelset}/baseline.json",
                  f"plots/{labelset}/predictions.csv", f"plots/{labelset}/efficiency.csv"):
            assert (clone / f).read_text() == (project / f).read_text(), f
    # an extraction that finds nothing to do (run by hand, outside DVC) leaves the cache as it was
    sh(sys.executable, "-m", "pipeline.stages.extract", "--videos", "data/demo/videos", "--out", "cache",
       cwd=project)
    status = dvc("status", "dvc.yaml", cwd=project)  # this pipeline (eventbench/dvc.yaml is not run here)
    assert "modified" not in status and "up to date" in status, status

    # an ablation of a stage-two knob re-runs stage two only: the cache is reused
    exp = dvc("exp", "run", "-S", "temporal.loss.event_l1=0.1", cwd=project)
    assert "Running stage 'train@order'" in exp
    assert "Running stage 'extract'" not in exp and "Running stage 'prepare'" not in exp
    # the baseline does not depend on STAN's own switches
    assert "Running stage 'baseline@order'" not in exp
    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=project,
                                      capture_output=True, text=True, timeout=300).stdout)
    rows = [*shown, *(e for row in shown for exp in row.get("experiments") or [] for e in exp["revs"])]
    assert len(rows) >= 3  # workspace, HEAD, the experiment: compared on metrics only
    compared = {(r["rev"], f, k) for r in rows for f, d in (r["data"].get("metrics") or {}).items()
                if f.startswith("metrics/") for k in flat_keys(d["data"])}  # not eventbench/: not run
    assert {k.split(".")[-1] for _, _, k in compared} == {"accuracy", "loss", "macro_f1"}, compared
    report = sh(sys.executable, "-m", "pipeline", "report", cwd=project)
    assert "temporal.loss.event_l1" in report and "order: stan accuracy" in report
