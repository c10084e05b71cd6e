"""dvc.yaml agrees with the stage scripts; the real `dvc repro` on a tiny demo, in a temporary copy."""

import ast
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.testing import REPO

TINY = {
    "demo": {"videos": 24, "min_seconds": 3, "max_seconds": 5, "fps": 5, "width": 64, "height": 48},
    "extract": {"batch_size": 16},
    "temporal": {"dim": 32, "heads": 2, "frames": 8, "epochs": 2, "batch_size": 8, "eval_views": 1},
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


def test_each_stage_depends_on_its_own_script_and_exactly_the_params_it_reads():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    scripts = stage_scripts()
    assert set(stages) == set(scripts) - {"eventbench"}  # the events benchmark's own prepare
    bench = yaml.safe_load((REPO / "eventbench" / "dvc.yaml").read_text())["stages"]
    for name, stage in bench.items():  # its stages run the same scripts, its prepare its own
        script = "eventbench" if name == "prepare" else name
        assert stage.get("do", stage)["cmd"].startswith(f"python -m pipeline.stages.{script} "), name
        assert f"../pipeline/stages/{script}.py" in stage.get("do", stage)["deps"], name
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        deps = set(stage["deps"])
        own = f"pipeline/stages/{name}.py"
        assert stage["cmd"].startswith(f"python -m pipeline.stages.{name} "), name
        assert own in deps and not {f"pipeline/stages/{s}.py" for s in scripts} - {own} & deps, name
        for mod in imported_modules(scripts[name]):  # what the script imports is a dependency
            top = mod.split(".")[0]
            if top == "pipeline":
                assert f"{mod.replace('.', '/')}.py" in deps, (name, mod)
            elif top in ("extract", "temporal", "storage"):
                assert top in deps, (name, mod)
        if {"extract", "temporal"} & deps:
            assert "storage" in deps, name  # both stages import it
        module = importlib.import_module(f"pipeline.stages.{name}")
        assert [str(p) for p in stage.get("params", [])] == module.PARAMS, name


def test_stage_params_follow_the_config_classes():
    """A new config field is a dependency of every stage that reads its section, unless excluded."""
    from dataclasses import fields

    from extract import ExtractConfig
    from pipeline.stages import baseline, efficiency, extract
    from temporal import Config
    from temporal.baseline import STAN_ONLY

    temporal = [f"temporal.{f.name}" for f in fields(Config)]
    assert set(extract.PARAMS) | {f"extract.{n}" for n in extract.NOT_FEATURES} == \
        {f"extract.{f.name}" for f in fields(ExtractConfig)}
    assert set(baseline.PARAMS) | {f"temporal.{n}" for n in STAN_ONLY} == set(temporal)
    assert set(efficiency.PARAMS) == set(temporal) - {"temporal.train_fraction"} | {"efficiency"}


def sh(*cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def project(tmp_path):
    """A fresh git repo holding this checkout's files, with tiny params."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if (REPO / f).is_file():
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, tmp_path / f)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", cwd=tmp_path)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=tmp_path)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny", cwd=tmp_path)
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
        assert stan["split"] == "test" and 0 <= stan["accuracy"] <= 1
        assert set(base) == {"linear", "mlp"} and 0 <= base["linear"]["accuracy"] <= 1
        predictions = (project / "plots" / labelset / "predictions.csv").read_text()
        assert predictions.startswith("video_id,actual,predicted")
    again = dvc("repro", cwd=project)
    assert "Running stage" not in again and "up to date" in again
    # an extraction that finds nothing to do (run by hand, outside DVC) leaves the cache as it was
    sh(sys.executable, "-m", "pipeline.stages.extract", "--videos", "data/demo/videos", "--out", "cache",
       cwd=project)
    status = dvc("status", "dvc.yaml", cwd=project)  # this pipeline (eventbench/dvc.yaml is not run here)
    assert "modified" not in status and "up to date" in status, status

    # an ablation of a stage-two knob re-runs stage two only: the cache is reused
    exp = dvc("exp", "run", "-S", "temporal.fusion=sum", cwd=project)
    assert "Running stage 'train@order'" in exp
    assert "Running stage 'extract'" not in exp and "Running stage 'prepare'" not in exp
    # the baseline does not depend on STAN's fusion switch
    assert "Running stage 'baseline@order'" not in exp
    shown = json.loads(dvc("exp", "show", "--json", cwd=project))
    assert shown  # the experiment is recorded
