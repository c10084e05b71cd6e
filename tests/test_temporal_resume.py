"""Resuming training from the per-epoch checkpoint, refusing to overwrite runs, and runs that
evaluate from any working directory."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import temporal
from temporal.checkpoint import CHECKPOINT, checkpoint_state
from temporal.run import RunError
from temporal.synth import class_task
from tests.test_temporal_train import TINY, cli, quiet, read_csv
from tests.testing import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

# dropout, both augmentations and the weight average on: every source of randomness and every
# running state must be restored on resume
NOISY = {**TINY, "dropout": 0.1, "aug_noise": 0.1, "aug_drop": 0.1, "ema": 0.9}
train_module = sys.modules["temporal.train"]  # `temporal.train` the attribute is the function


def same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def untimed(run):
    hist = [{k: v for k, v in r.items() if k != "seconds"} for r in read_csv(run / "history.csv")]
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("train_seconds")
    return hist, summary


class Killed(BaseException):
    pass


def interrupt_after(monkeypatch, epoch: int) -> None:
    """Make training stop dead right after the checkpoint of `epoch` is written."""
    save = train_module.save_checkpoint

    def save_then_stop(path, *args, **kw):
        save(path, *args, **kw)
        if args[-1]["epoch"] == epoch:
            raise Killed

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)


def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, monkeypatch):
    cache, labels = class_task(tmp_path, videos=16, classes=2, lengths=(5, 30))
    whole = temporal.train(cache, labels, tmp_path / "whole", NOISY, epochs=4, log=quiet)
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Killed):
        temporal.train(cache, labels, tmp_path / "cut", NOISY, epochs=4, log=quiet)
    monkeypatch.undo()
    cut = tmp_path / "cut"
    assert {p.name for p in cut.iterdir()} == {CHECKPOINT, "history.csv"}
    assert checkpoint_state(cut / CHECKPOINT)["epoch"] == 2
    lines = []
    temporal.train(cache, labels, cut, NOISY, epochs=4, resume=True, log=lines.append)
    assert any(f"resuming {cut} after epoch 2/4" in s for s in lines)
    assert same_weights(whole, cut)
    assert untimed(whole) == untimed(cut)
    assert not (cut / CHECKPOINT).exists()  # finished: nothing left to resume


def test_resume_needs_the_same_options_and_out_refuses_to_overwrite(tmp_path, monkeypatch):
    cache, labels = class_task(tmp_path, videos=12, classes=2)
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Killed):
        temporal.train(cache, labels, tmp_path / "run", TINY, epochs=3, log=quiet)
    monkeypatch.undo()
    with pytest.raises(RunError, match=r"interrupted run .*--resume.*--overwrite"):
        temporal.train(cache, labels, tmp_path / "run", TINY, epochs=3, log=quiet)
    with pytest.raises(RunError, match=r"other options .*lr: 0.003 -> 0.01"):
        temporal.train(cache, labels, tmp_path / "run", TINY, epochs=3, lr=1e-2, resume=True, log=quiet)
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=3, resume=True, log=quiet)
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match=r"already holds a finished run.*--overwrite"):
        temporal.train(cache, labels, run, TINY, epochs=3, seed=1, log=quiet)
    with pytest.raises(RunError, match=r"already finished.*nothing to resume"):
        temporal.train(cache, labels, run, TINY, epochs=3, resume=True, log=quiet)
    assert (run / "model.safetensors").read_bytes() == before  # untouched by the refusals
    temporal.train(cache, labels, run, TINY, epochs=3, seed=1, overwrite=True, log=quiet)
    assert (run / "model.safetensors").read_bytes() != before


def test_a_run_evaluates_from_another_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    class_task(project, videos=12, classes=2)
    monkeypatch.chdir(project)  # relative paths, as a user types them
    temporal.train("cache", "labels.csv", "runs/stan", TINY, epochs=1, log=quiet)
    meta = json.loads((project / "runs/stan/config.json").read_text())
    assert meta["cache"] == str(project / "cache") and meta["cache_from_run"] == "../../cache"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert temporal.evaluate(project / "runs/stan", "test", log=quiet)["videos"] == 4
    moved = tmp_path / "moved"  # the whole tree moved: found relative to the run
    project.rename(moved)
    assert temporal.evaluate(moved / "runs/stan", "test", log=quiet)["videos"] == 4
    (moved / "labels.csv").rename(moved / "gone.csv")
    with pytest.raises(FileNotFoundError, match=r"labels recorded at training not found .*pass --labels"):
        temporal.evaluate(moved / "runs/stan", "test", log=quiet)


@pytest.mark.slow
def test_cli_resumes_a_sigkilled_run_to_the_uninterrupted_result(tmp_path):
    cache, labels = class_task(tmp_path, videos=48, classes=3, lengths=(8, 40))
    from temporal.config import RENAMED, flat_name

    flags = {flat_name(RENAMED[k][0]) if k in RENAMED else k: v for k, v in NOISY.items()}  # dim: --width
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in {**flags, "epochs": 12, "patience": 0}.items()]
    cli("train", "--cache", cache, "--labels", labels, "--out", tmp_path / "whole", *opts)
    cut = tmp_path / "cut"
    args = ["train", "--cache", cache, "--labels", labels, "--out", cut, *opts]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "temporal", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (cut / CHECKPOINT).exists() and checkpoint_state(cut / CHECKPOINT)["epoch"] >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = checkpoint_state(cut / CHECKPOINT)["epoch"]
    assert 3 <= killed_at < 12 and not (cut / "summary.json").exists()
    proc = cli(*args, check=False)  # without --resume: refused, nothing lost
    assert proc.returncode == 2 and "--resume" in proc.stderr and (cut / CHECKPOINT).exists()
    proc = cli(*args, "--resume")
    assert f"resuming {cut} after epoch {killed_at}/12" in proc.stdout
    assert same_weights(tmp_path / "whole", cut)
    assert untimed(tmp_path / "whole") == untimed(cut)
    proc = cli(*args, check=False)
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr
    assert "--overwrite" in proc.stderr


def test_epochs_run_and_stopped_early_whether_stopped_killed_or_run_to_the_end(tmp_path, monkeypatch):
    cache, labels = class_task(tmp_path, videos=24, classes=2)
    opts = {**TINY, "lr": 3e-2, "monitor": "accuracy", "patience": 2, "epochs": 20}
    early = temporal.train(cache, labels, tmp_path / "early", opts, log=quiet)
    hist, summary = untimed(early)
    stop = len(hist)  # patience ran out: 2 epochs without a better val accuracy
    assert summary["stopped_early"] and summary["epochs_run"] == stop == summary["best_epoch"] + 2 < 20
    # the same run with its last epoch where patience runs out: ran to the maximum, not stopped early
    full = temporal.train(cache, labels, tmp_path / "full", {**opts, "epochs": stop}, log=quiet)
    assert (untimed(full)[1]["stopped_early"], untimed(full)[1]["epochs_run"]) == (False, stop)
    # killed right after the checkpoint of the stopping epoch: resuming trains no more epochs
    interrupt_after(monkeypatch, stop)
    with pytest.raises(Killed):
        temporal.train(cache, labels, tmp_path / "cut", opts, log=quiet)
    monkeypatch.undo()
    temporal.train(cache, labels, tmp_path / "cut", opts, resume=True, log=quiet)
    assert untimed(tmp_path / "cut") == (hist, summary) and same_weights(early, tmp_path / "cut")
