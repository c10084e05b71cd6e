"""Training, evaluation, baselines and the CLI, end to end on caches the tests write."""

import csv
import json

import numpy as np
import pytest
import torch

import storage
import temporal
from temporal.run import RunError
from temporal.synth import class_task, order_task, regression_task, write_cache, write_labels
from tests.testing import run_module

TINY = dict(streams="both", dim=32, heads=4, depth_spatial=1, depth_temporal=1, depth_fusion=1, clip_len=2,
            frames=16, batch_size=8, lr=3e-3, warmup=1, dropout=0.0, eval_views=2)


def quiet(*_a, **_k):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args, **kw):
    return run_module("temporal", *args, env={"OMP_NUM_THREADS": "1"}, **kw)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_loss_falls_and_the_run_directory_is_complete(tmp_path):
    cache, labels = class_task(tmp_path, videos=48, classes=3, lengths=(8, 40))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics_test.json").write_text("{}")  # from an earlier run: must not survive
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=8, patience=0, log=quiet)
    files = {p.name for p in run.iterdir()}
    assert files == {"config.json", "model.safetensors", "history.csv", "summary.json"}
    hist = read_csv(run / "history.csv")
    # val_output: which head (fused, or one branch's) predicts best on val this epoch
    cols = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "val_output", "lr", "seconds"]
    assert list(hist[0]) == cols
    losses = [float(r["train_loss"]) for r in hist]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val"]["accuracy"] > 0.9 and summary["videos"] == {"train": 24, "val": 12, "test": 12}
    meta = json.loads((run / "config.json").read_text())
    assert meta["task"] == "single" and meta["classes"] == ["class0", "class1", "class2"]
    assert meta["config"]["stan"]["fusion"] == "cross"
    assert meta["output"] in ("fused", "spatial", "temporal", "summary")


def test_training_is_reproducible_with_a_seed(tmp_path):
    cache, labels = class_task(tmp_path, videos=24, classes=2, lengths=(5, 30))
    runs = [temporal.train(cache, labels, tmp_path / f"r{i}", TINY, epochs=3, sampling="window", log=quiet)
            for i in range(2)]
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in read_csv(run / "history.csv")]
             for run in runs]
    assert strip[0] == strip[1]
    other = temporal.train(cache, labels, tmp_path / "r2", TINY, epochs=3, sampling="window", seed=1,
                           log=quiet)
    assert read_csv(other / "history.csv")[0]["train_loss"] != strip[0][0]["train_loss"]


@pytest.mark.slow
def test_saved_run_reloads_in_a_fresh_process_and_reproduces_its_metrics(tmp_path):
    cache, labels = class_task(tmp_path, videos=36, classes=3, lengths=(10, 50))
    out = tmp_path / "runs" / "x"
    proc = cli("train", "--cache", cache, "--labels", labels, "--out", out,
               "--width", 32, "--attention-heads", 4, "--depth-spatial", 1, "--depth-temporal", 1,
               "--clip-len", 2, "--frames", 16, "--epochs", 4, "--lr", 3e-3, "--batch-size", 8,
               "--eval-views", 3)
    # the defaults: both streams, the event summary, and the head that predicts
    assert "trained stan: streams both/cross + event summary (K=24, pairs, gaps) on 18 videos" in \
        proc.stdout
    assert "(predicting with the " in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    cli("evaluate", "--run", out, "--split", "val", "--metrics", tmp_path / "m.json",
        "--predictions", tmp_path / "p.csv")
    again = json.loads((tmp_path / "m.json").read_text())
    assert again.pop("split") == "val"
    assert again == pytest.approx(summary["val"], rel=1e-6)
    preds = read_csv(tmp_path / "p.csv")
    assert list(preds[0])[:3] == ["video_id", "actual", "predicted"] and len(preds) == 9
    assert {r["actual"] for r in preds} <= {"class0", "class1", "class2"}
    # default output names, full-length evaluation, and the test split
    cli("evaluate", "--run", out, "--eval-mode", "full")
    test = json.loads((out / "metrics_test.json").read_text())
    assert test["split"] == "test" and test["videos"] == 9 and (out / "predictions_test.csv").exists()


def test_the_default_two_stream_network_learns_event_order_and_mean_pool_cannot(tmp_path):
    cache, labels = order_task(tmp_path, pairs=120, frames=16, event_len=2, dim=16)
    # the default model (both streams beside the event summary, each branch with a head and a loss of
    # its own, dropped at random); only the training is shortened, to the videos' 16 frames
    cfg = dict(frames=16, epochs=20, batch_size=16, lr=2e-3, patience=6)
    assert temporal.as_config(cfg).stan == temporal.Config().stan
    run = temporal.train(cache, labels, tmp_path / "stan", cfg, log=quiet)
    stan = temporal.evaluate(run, "test", log=quiet)
    ref = temporal.baseline(cache, labels, tmp_path / "probe", cfg, log=quiet)
    # each test pair holds the same frames in both orders: an order-blind model scores exactly 1/2
    assert ref["linear"]["test"]["accuracy"] == pytest.approx(0.5)
    assert ref["mlp"]["test"]["accuracy"] == pytest.approx(0.5)
    assert stan["accuracy"] >= 0.75, stan  # 48 test videos: chance would be 0.5 +- 0.07
    metrics = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert set(metrics) == {"linear", "minirocket", "mlp"} and metrics["linear"]["estimator"] == "logistic"
    assert metrics["minirocket"]["estimator"] == "ridge" and metrics["minirocket"]["test"]["videos"] == 48
    assert (tmp_path / "probe" / "predictions_linear_test.csv").exists()
    assert (tmp_path / "probe" / "predictions_minirocket_test.csv").exists()


def test_multi_label_and_regression_train_and_evaluate(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 8)) * 2
    videos, multi, reg = [], [], []
    for i in range(40):
        on = [c for c in range(3) if (i >> c) & 1] or [i % 3]
        x = rng.standard_normal((12, 8)) + centres[on].sum(0)
        vid = f"v{i}.mp4"
        videos.append((vid, x.astype(np.float16), np.arange(12, dtype=np.float32)))
        split = "test" if i % 5 == 0 else "val" if i % 5 == 1 else "train"
        multi.append((vid, "|".join("xyz"[c] for c in on), split))
        reg.append((vid, f"{100 + 10 * x[:, 0].mean():.3f}", split))
    cache = write_cache(tmp_path / "cache", videos, dim=8)
    for name, rows, key in (("multi", multi, "map"), ("reg", reg, "r2")):
        labels = write_labels(tmp_path / f"{name}.csv", rows)
        run = temporal.train(cache, labels, tmp_path / name, TINY, epochs=8, frames=12, log=quiet)
        m = temporal.evaluate(run, "test", log=quiet)
        assert m[key] is not None and m[key] > 0.5, m
        preds = read_csv(run / "predictions_test.csv")
        assert len(preds) == 8 and preds[0]["video_id"].startswith("v")
    meta = json.loads((tmp_path / "reg" / "config.json").read_text())
    train_y = [float(label) for _, label, split in reg if split == "train"]
    assert meta["task"] == "regression" and meta["target_mean"] == pytest.approx(np.mean(train_y))
    errors = [abs(float(r["predicted"]) - float(r["actual"])) for r in preds]  # in label units
    assert np.mean(errors) < np.std(train_y)
    ref = temporal.baseline(cache, tmp_path / "reg.csv", tmp_path / "probe", TINY, mlp=False, log=quiet)
    assert ref["linear"]["estimator"] == "ridge" and ref["linear"]["test"]["r2"] > 0.5


def test_evaluate_refuses_a_cache_with_another_fingerprint(tmp_path):
    cache, labels = class_task(tmp_path, videos=12, classes=2)
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=1, log=quiet)
    reader = storage.open_cache(cache)
    with storage.CacheWriter(tmp_path / "other", dim=reader.dim, dtype="float16",
                             fingerprint={"backbone": "another"}) as w:
        sw = w.shard_writer(w.allocate_shard())
        for v in reader.iter_videos():
            sw.add(v.id, v.features, v.timestamps)
        sw.commit()
    with pytest.raises(RunError, match="fingerprint differs"):
        temporal.evaluate(run, "test", cache_dir=tmp_path / "other", log=quiet)
    assert temporal.evaluate(run, "test", cache_dir=cache, log=quiet)["videos"] == 4


@pytest.mark.slow
def test_cli_errors_are_clear(tmp_path):
    cache, labels = class_task(tmp_path, videos=12, classes=2)
    bad = tmp_path / "params.yaml"
    bad.write_text("temporal:\n  fuson: cross\n")
    proc = cli("train", "--cache", cache, "--labels", labels, "--out", tmp_path / "r", "--config", bad,
               check=False)
    assert proc.returncode == 2 and "did you mean 'fusion'" in proc.stderr
    missing = write_labels(tmp_path / "m.csv", [("v0000.mp4", "a", "train"), ("nope.mp4", "b", "train")])
    proc = cli("train", "--cache", cache, "--labels", missing, "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "not in the cache" in proc.stderr and "'nope.mp4'" in proc.stderr


def test_the_kept_weights_are_the_best_val_epochs(tmp_path):
    cache, labels = class_task(tmp_path, videos=36, classes=3, lengths=(8, 30))
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=8, patience=3, lr=3e-2, log=quiet)
    hist = read_csv(run / "history.csv")
    losses = [float(r["val_loss"]) for r in hist]
    summary = json.loads((run / "summary.json").read_text())
    best = int(np.argmin(losses)) + 1
    assert summary["best_epoch"] == best
    # the saved weights reproduce that epoch's val loss, not the last epoch's
    again = temporal.evaluate(run, "val", log=quiet)
    assert again["loss"] == pytest.approx(losses[best - 1], rel=1e-5)
    assert summary["epochs_run"] == len(hist) and summary["stopped_early"] == (len(hist) < 8)


def test_train_fraction_trains_on_the_stratified_subset(tmp_path):
    cache, labels = class_task(tmp_path, videos=60, classes=3)
    lines = []
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=1, train_fraction=0.34,
                         log=lines.append)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["videos"]["train"] == 12  # ceil(0.34 x 10) x 3 classes of the 30 train videos
    assert any("training on 12 of 30 train videos" in s for s in lines)


def test_a_regression_run_evaluates_on_labels_without_train_rows(tmp_path):
    cache, labels, rows = regression_task(tmp_path)
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=2, log=quiet)
    only_test = write_labels(tmp_path / "test.csv", [r for r in rows if r[2] == "test"])
    m = temporal.evaluate(run, "test", labels_csv=only_test, log=quiet)
    assert m["videos"] == 10 and m["mse"] is not None


def test_cls_and_mask_tokens_are_not_weight_decayed():
    from temporal.loop import param_groups

    model = temporal.build_model(temporal.as_config(TINY, frames=8), 16, 3)
    decayed, kept = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.05 and kept["weight_decay"] == 0.0
    assert {names[id(p)] for p in kept["params"]} >= {"spatial.encoder.cls", "temporal.encoder.cls"}
    assert all(p.dim() >= 2 and not names[id(p)].endswith("cls") for p in decayed["params"])


def test_pretraining_reconstructs_the_timeline_and_fine_tuning_starts_from_it(tmp_path):
    from temporal.pretrain import pretrain

    cache, labels = order_task(tmp_path, pairs=24, frames=24, dim=16)
    cfg = {**TINY, "clip_len": 1, "frames": 24}
    pre = pretrain(cache, tmp_path / "pre", cfg, epochs=12, targets=8, log=quiet)
    hist = read_csv(pre / "history.csv")
    assert float(hist[-1]["loss"]) < 0.9 * float(hist[0]["loss"])  # it learns to say what is when
    run = temporal.train(cache, labels, tmp_path / "run", cfg, epochs=1, init=str(pre), log=quiet)
    from safetensors.torch import load_file

    before, after = load_file(str(pre / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert set(before) < set(after)  # the head is new
    other = "learned" if temporal.as_config(cfg).stan.prototypes == "fitted" else "fitted"
    summary = {"prototypes": other, "event_gaps": False, "event_norm": "layer"}  # shape events.* alone
    temporal.train(cache, labels, tmp_path / "fz", {**cfg, **summary}, epochs=1, init=str(pre),
                   log=quiet)  # the summary is fitted anew: how it is built is not handed over
    with pytest.raises(temporal.ConfigError, match=r"another architecture: stan\.width=32"):
        temporal.train(cache, labels, tmp_path / "bad", {**cfg, "dim": 64}, epochs=1, init=str(pre),
                       log=quiet)


def test_the_pretrain_stage_switched_off_trains_exactly_like_a_random_init(tmp_path):
    """pretrain.epochs 0 (the pipeline's default): the stage writes a weightless run in place, and
    train from it ends with the very weights of a run without init; the holdout is every labels
    file's test split."""
    from safetensors.torch import load_file

    from pipeline.stages import pretrain as stage
    from temporal.labels import read_labels

    cache, labels = class_task(tmp_path, videos=12, classes=2)
    (tmp_path / "params.yaml").write_text(json.dumps({"temporal": TINY, "pretrain": {"epochs": 0}}))
    out = tmp_path / "pre"
    assert stage.main(["--params", str(tmp_path / "params.yaml"), "--cache", str(cache), "--holdout",
                       str(labels.parent), "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "config.json").read_text())
    lab = read_labels(labels)
    assert meta["epochs"] == 0 and not (out / "model.safetensors").exists()
    assert meta["videos"] == len(lab.ids) - len(lab.rows("test"))
    plain = temporal.train(cache, labels, tmp_path / "plain", TINY, epochs=2, log=quiet)
    lines = []
    inited = temporal.train(cache, labels, tmp_path / "init", TINY, epochs=2, init=str(out), log=lines.append)
    assert any("random init" in s for s in lines)
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(inited / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_full_length_evaluation_warns_when_training_saw_fewer_frames(tmp_path):
    cache, labels = class_task(tmp_path, videos=12, classes=2, frames=30)
    lines = []
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=1, log=quiet)  # frames=16 < 30
    temporal.evaluate(run, "test", eval_mode="full", log=lines.append)
    assert any("warning: eval_mode full: 4 video(s) are longer than the 16 frames" in s for s in lines)
    lines.clear()
    run = temporal.train(cache, labels, tmp_path / "all", TINY, epochs=1, frames=30, log=quiet)
    temporal.evaluate(run, "test", eval_mode="full", log=lines.append)
    assert not any("warning" in s for s in lines)


@pytest.mark.slow  # (the fast tier stays under a minute; CI runs it)
def test_train_on_a_damaged_cache_names_the_shard(tmp_path):
    cache, labels = class_task(tmp_path, videos=12, classes=2)
    shard = storage.shard_paths(cache)[0]
    chunks = sorted(p for p in (shard / "features").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunks[0].write_bytes(b"not a zstd frame")
    proc = cli("train", "--cache", cache, "--labels", labels, "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and shard.name in proc.stderr and "--repair" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("lasso,l1", [("proximal", 3.0), ("penalty", 0.3)])
def test_the_group_lasso_keeps_the_few_summary_numbers_the_label_depends_on(tmp_path, lasso, l1):
    """Order of two events, 16 train videos: with event_l1 the head's weight gathers on a few of
    the summary's 3K + K(K-1)/2 numbers (the events' pair and positions), without it it spreads;
    the proximal step sets the others exactly to 0."""
    cache, labels = order_task(tmp_path, pairs=20, frames=24, event_len=3, dim=16, val=0.1, test=0.5)
    cfg = dict(TINY, streams="none", events=6, event_pairs=True, event_gaps=False, epochs=30, patience=0,
               lasso=lasso)
    top, cols = {}, {}
    for weight in (0.0, l1):
        run = temporal.train(cache, labels, tmp_path / f"l1_{weight}", cfg, event_l1=weight, log=quiet)
        cols[weight] = col = temporal.load_run(run).model.events.column_norms().detach()  # 18 + 15 pairs
        top[weight] = float(col.topk(3).values.sum() / col.sum())
        if weight:
            assert temporal.evaluate(run, "test", log=quiet)["accuracy"] >= 0.8
    assert top[l1] > 2 * top[0.0], top
    zeros = int((cols[l1] == 0).sum())
    assert (zeros >= len(cols[l1]) // 2) if lasso == "proximal" else zeros == 0, cols[l1]


@pytest.mark.parametrize("kind", ["centre", "layer"])
def test_the_proximal_step_moves_every_column_the_same_distance_towards_zero(kind):
    from temporal.model import EventSummary

    ev = EventSummary(in_dim=8, k=3, dim=4, norm=kind)
    norm, linear = ev.proj
    gain = torch.linspace(0.5, 2.0, 9) if kind == "layer" else torch.ones(9)  # a LayerNorm's counts
    with torch.no_grad():
        if kind == "layer":
            norm.weight.copy_(gain)
        linear.weight.normal_()
        linear.weight[:, 0] *= 1e-3  # a column shorter than the step
    before = (linear.weight * gain).norm(dim=0)
    ev.shrink(0.05)
    after = (linear.weight * gain).norm(dim=0)
    assert after[0] == 0
    assert torch.allclose(after[1:], before[1:] - 0.05, atol=1e-6)
    assert torch.allclose(ev.penalty(), after.sum())


def test_a_run_whose_weights_do_not_fit_its_config_is_refused_by_name(tmp_path):
    cache, labels = class_task(tmp_path, videos=24, classes=3)
    run = temporal.train(cache, labels, tmp_path / "run", TINY, epochs=1, log=quiet)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["stan"]["event_pairs"] ^= True  # as a run of another version reads
    (run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match=r"run: its weights do not fit the model its config\.json describes"):
        temporal.load_run(run)


def test_a_run_interrupted_before_the_lasso_existed_resumes_without_it(tmp_path):
    from temporal.config import flat_name
    from temporal.train import check_resumable

    then = temporal.as_config(TINY, event_l1=0.0, lasso="penalty", aux_loss=0.0, branch_drop=0.0,
                              recurrence=False)
    new = ("loss.", "stan.time_bias", "stan.recurrence")  # options that version did not have yet
    saved = {flat_name(p): v for p, v in then.flat().items() if not p.startswith(new)}  # a flat save
    saved["dim"], saved["heads"] = saved.pop("width"), saved.pop("attention_heads")
    state = {"config": saved, "fingerprint": {"f": 1}}
    check_resumable(tmp_path, state, then, {"f": 1})
    with pytest.raises(RunError, match=r"loss\.event_l1: 0\.0 -> 0\.3"):
        check_resumable(tmp_path, state, then.replace(event_l1=0.3), {"f": 1})


@pytest.mark.slow  # (the fast tier stays under a minute; CI runs it)
def test_stage_two_reads_a_cache_on_an_fsspec_url(tmp_path):
    """Stage one writes caches to object stores: train, evaluate and the CLI read one there, and the
    run records the URL (local:// is fsspec's object-store protocol on a folder, which a CLI
    subprocess can see; memory:// could not be)."""
    import shutil

    from storage.location import ObjectPath, as_path

    cache, labels = class_task(tmp_path, videos=24, classes=2, lengths=(8, 20))
    shutil.copytree(cache, tmp_path / "bucket" / "cache")
    url = f"local://{tmp_path / 'bucket' / 'cache'}"
    assert isinstance(as_path(url), ObjectPath)
    run = temporal.train(url, labels, tmp_path / "run", TINY, epochs=2, log=quiet)
    assert json.loads((run / "config.json").read_text())["cache"] == as_path(url).url
    assert temporal.evaluate(run, log=quiet) == temporal.evaluate(run, cache_dir=cache, log=quiet)
    out = cli("evaluate", "--run", str(run), "--cache", url, "--metrics", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "m.json").read_text())["videos"] == 6


def test_minirocket_leaves_torchs_thread_count_as_it_found_it(tmp_path):
    """aeon sets torch's thread count to the cores'; a STAN run after the probe in the same process
    (the efficiency stage) would then sum in another order and miss its committed figures."""
    import torch

    cache, labels = class_task(tmp_path, videos=24, classes=2)
    torch.set_num_threads(1)
    temporal.baseline(cache, labels, tmp_path / "probe", TINY, mlp=False, probes=("minirocket",), log=quiet)
    assert torch.get_num_threads() == 1


def test_the_weight_average_follows_the_weights_with_a_warmed_up_decay():
    from temporal.loop import average_weights

    model = temporal.build_model(temporal.as_config(TINY, frames=8, events=4), 16, 3)
    ema = temporal.build_model(temporal.as_config(TINY, frames=8, events=4), 16, 3)
    a, m = dict(ema.named_parameters()), dict(model.named_parameters())
    name = next(iter(a))
    start = a[name].detach().clone()
    model.selected.fill_(1)
    average_weights(ema, model, 0.99, step=0)  # the first step: decay min(0.99, 1/10)
    assert torch.allclose(a[name], 0.1 * start + 0.9 * m[name])
    assert int(ema.selected) == 1  # integer buffers are copied, not averaged
    before = a[name].detach().clone()
    average_weights(ema, model, 0.99, step=10**6)  # late: the decay itself
    assert torch.allclose(a[name], 0.99 * before + 0.01 * m[name])


@pytest.mark.parametrize("prototypes", ["learned", "fitted"])
def test_fitted_prototypes_stay_the_k_means_centres(tmp_path, prototypes):
    from safetensors.torch import load_file

    from temporal.dataset import load_data
    from temporal.loop import fit_without_labels

    cache, labels = order_task(tmp_path, pairs=12, frames=16, dim=16)
    cfg = temporal.as_config({**TINY, "events": 4, "frames": 16, "prototypes": prototypes})
    run = temporal.train(cache, labels, tmp_path / "run", cfg, epochs=2, log=quiet)
    trained = load_file(str(run / "model.safetensors"))["events.protos"]
    data = load_data(cache, labels, cfg, log=quiet)
    model = temporal.build_model(cfg, 16, 2)
    fit_without_labels(model, data.videos, data.train, cfg)  # what training started from
    assert torch.equal(trained, model.events.protos.detach()) == (prototypes == "fitted")
