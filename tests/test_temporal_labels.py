"""Labels, config and metrics: clear errors, nothing dropped silently, scikit-learn agreement."""

import numpy as np
import pytest
import yaml
from sklearn import metrics as skm

import storage
from temporal import Config, ConfigError, LabelError, as_config, load_config_file, read_labels
from temporal.labels import check_classes, infer_task, match_cache, train_subset
from temporal.metrics import compute_metrics
from temporal.synth import write_cache


def csv_file(tmp_path, text, name="labels.csv"):
    p = tmp_path / name
    p.write_text("video_id,label,split\n" + text)
    return p


def test_task_inference():
    assert infer_task(["cat", "dog"]) == "single"
    assert infer_task(["0", "1", "2"]) == "single"  # integer labels are classes by default
    assert infer_task(["0.5", "2", "3.25"]) == "regression"
    assert infer_task(["a|b", "c"]) == "multi"


def test_single_multi_regression_parse(tmp_path):
    lab = read_labels(csv_file(tmp_path, "a.mp4,dog,train\nb.mp4,cat,val\nc.mp4,dog,test\n"))
    assert (lab.task, lab.classes, lab.targets) == ("single", ["cat", "dog"], [1, 0, 1])
    lab = read_labels(csv_file(tmp_path, "a,x|y,train\nb,,train\nc,y,test\n"))
    assert lab.task == "multi" and lab.classes == ["x", "y"]
    np.testing.assert_array_equal(lab.target_array([0, 1, 2]), [[1, 1], [0, 0], [0, 1]])
    assert lab.label_text(0) == "x|y"
    lab = read_labels(csv_file(tmp_path, "a,1.5,train\nb,2,train\n"))
    assert lab.task == "regression" and lab.targets == [1.5, 2.0]
    lab = read_labels(csv_file(tmp_path, "a,2,train\nb,10,train\n"), task="regression")
    assert lab.task == "regression"
    assert read_labels(csv_file(tmp_path, "a,10,train\nb,2,train\n")).classes == ["2", "10"]


@pytest.mark.parametrize(("rows", "message"), [
    ("a,x,train\nb,y,validation\n", "split 'validation' for 'b' is not one of"),
    ("a,x,train\na,y,test\n", "'a' already labelled on line 2"),
    ("a,x,train\nb,,train\n", "'b': empty label"),
    ("a,x,train\nb,x,test\n", "at least 2 classes"),
    ("a,1.5,train\nb,oops,train\n", None),
    ("a,x,train\n../../etc/passwd,y,train\n", "line 3: video id '../../etc/passwd' escapes"),
    ("a,x,train\n/abs.mp4,y,train\n", "line 3: video id '/abs.mp4' escapes"),
])
def test_bad_label_files_name_the_rows(tmp_path, rows, message):
    path = csv_file(tmp_path, rows)
    task = "regression" if "1.5" in rows else "auto"
    with pytest.raises(LabelError, match=message or "not a finite number"):
        read_labels(path, task)


def test_missing_header_is_an_error(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("id,label\na,x\n")
    with pytest.raises(LabelError, match="missing column"):
        read_labels(p)


def _cache(tmp_path, lengths):
    videos = [(v, np.ones((n, 4), np.float16), np.arange(n, dtype=np.float32)) for v, n in lengths.items()]
    return storage.open_cache(write_cache(tmp_path / "cache", videos, dim=4))


def test_ids_missing_from_the_cache_fail_or_are_skipped_with_a_count(tmp_path):
    cache = _cache(tmp_path, {"a.mp4": 5, "b.mp4": 5, "empty.mp4": 0, "extra.mp4": 3})
    lab = read_labels(csv_file(tmp_path, "a.mp4,x,train\nb.mp4,y,train\nempty.mp4,x,train\n"
                                         "gone.mp4,x,test\nlost.mp4,y,val\n"))
    with pytest.raises(LabelError, match=r"2 labelled video\(s\) are not in the cache.*'gone.mp4'"):
        match_cache(lab, cache)
    kept, notes = match_cache(lab, cache, skip_missing=True)
    assert kept.ids == ["a.mp4", "b.mp4"]
    text = "\n".join(notes)
    assert "skipped 2 labelled video(s) not in the cache" in text
    assert "skipped 1 video(s) with zero frames" in text
    assert "1 cached video(s) have no label" in text


def test_classes_without_training_videos_are_an_error(tmp_path):
    lab = read_labels(csv_file(tmp_path, "a,x,train\nb,y,test\n"))
    with pytest.raises(LabelError, match=r"1 class\(es\) have no training videos: 'y'"):
        check_classes(lab, lab.rows("train"))
    with pytest.raises(LabelError, match="train split is empty"):
        check_classes(lab, [])


def test_train_fraction_is_stratified_nested_and_deterministic(tmp_path):
    rows = "".join(f"v{i},{'abc'[i % 3]},train\n" for i in range(60)) + "t,a,test\n"
    lab = read_labels(csv_file(tmp_path, rows))
    quarter, half = train_subset(lab, 0.25), train_subset(lab, 0.5)
    assert len(quarter) == 15 and len(half) == 30
    assert set(quarter) <= set(half)  # nested: a data-efficiency curve grows one training set
    assert quarter == train_subset(lab, 0.25)
    assert sorted(np.bincount([lab.targets[i] for i in quarter])) == [5, 5, 5]
    assert len(train_subset(lab, 0.01)) == 3  # at least one video per class


def test_config_rejects_unknown_and_invalid_options(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown temporal option.*'fuson' \(did you mean 'fusion'\?\)"):
        Config.from_dict({"fuson": "cross"})
    with pytest.raises(ConfigError, match="fusion='add'"):
        as_config(fusion="add")
    with pytest.raises(ConfigError, match="divisible"):
        as_config(dim=30, heads=4)
    with pytest.raises(ConfigError, match="expected int"):
        Config.from_dict({"epochs": "ten"})
    assert Config.from_dict({"lr": 1}).optim.lr == 1.0
    assert Config.from_dict({"optim": {"lr": 2}}).optim.lr == Config.from_dict({"optim.lr": 2}).optim.lr == 2
    with pytest.raises(ConfigError, match=r"'stan\.widht' \(did you mean 'stan\.width'\?\)"):
        Config.from_dict({"stan": {"widht": 64}})
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"extract": {"fps": 1}, "temporal": {"fusion": "late", "clip_len": 8}}))
    assert Config.from_dict(load_config_file(p)) == as_config(fusion="late", clip_len=8)


def test_metrics_agree_with_scikit_learn_and_hand_values():
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    probs = np.eye(3)[[0, 2, 2, 2, 1, 1, 0, 1]] * 0.8 + 0.2 / 3
    m = compute_metrics("single", y, probs)
    assert m["accuracy"] == pytest.approx(5 / 8)
    # per class: 0 -> P 1/2, R 1/2, F1 1/2; 1 -> 2/3; 2 -> 2/3
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)

    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    S = np.array([[0.9, 0.2, 0.1], [0.6, 0.4, 0.3], [0.3, 0.7, 0.2], [0.1, 0.8, 0.6]])
    m = compute_metrics("multi", Y, S)
    # class 2 has no positives: average precision is undefined there and left out
    assert m["map"] == pytest.approx(np.mean([skm.average_precision_score(Y[:, c], S[:, c]) for c in (0, 1)]))
    assert m["map"] == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2) / 2)
    assert m["micro_f1"] == pytest.approx(skm.f1_score(Y, S >= 0.5, average="micro"))

    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 5.0])
    m = compute_metrics("regression", y, p)
    assert m["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert compute_metrics("regression", y[:1], p[:1])["r2"] is None  # undefined -> null, not NaN


def test_train_fraction_is_stratified_and_seeded_for_every_task(tmp_path):
    # multi-label: a rare class (2 of 60 videos) must survive a 10 % subset
    rows = "".join(f"v{i},{'x|z' if i < 2 else 'xy'[i % 2]},train\n" for i in range(60)) + "t,x,test\n"
    lab = read_labels(csv_file(tmp_path, rows, "multi.csv"))
    z = lab.classes.index("z")
    for seed in range(5):
        sub = train_subset(lab, 0.1, seed)
        assert any(z in lab.targets[i] for i in sub) and len(sub) <= 10
    # regression: every fifth of the target's range keeps its share
    rows = "".join(f"r{i},{i + 0.5},train\n" for i in range(100)) + "t,1.5,test\n"
    lab = read_labels(csv_file(tmp_path, rows, "reg.csv"))
    sub = train_subset(lab, 0.2, 0)
    assert sorted(np.bincount([int(lab.targets[i] // 20) for i in sub])) == [4, 4, 4, 4, 4]
    # seeds draw different subsets (error bars over subsets), each nested across fractions
    a, b = train_subset(lab, 0.2, 0), train_subset(lab, 0.2, 1)
    assert a != b and set(a) <= set(train_subset(lab, 0.5, 0))
    assert a == train_subset(lab, 0.2, 0)


def test_r2_of_a_constant_target_is_undefined_not_zero():
    y = np.full(5, 3.0)
    assert compute_metrics("regression", y, y + 0.1)["r2"] is None
    assert compute_metrics("regression", y, y)["r2"] is None


def test_params_yaml_trains_what_the_cli_trains():
    # one set of defaults: `python -m temporal train` with no options and `dvc repro` agree
    from tests.testing import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())["temporal"]
    assert Config.from_dict(params) == Config()


def test_runs_saved_with_a_pair_rank_load_when_it_was_off_and_are_refused_otherwise():
    assert Config.from_dict({"event_pairs": 0}).stan.event_pairs is False
    assert Config.from_dict({"event_pairs": True}).stan.event_pairs is True
    with pytest.raises(ConfigError, match="event_pairs=4: the rank-r pair readout is gone"):
        Config.from_dict({"event_pairs": 4})  # its bilinear forms' weights fit no more


def test_a_flat_config_saved_by_an_older_version_reads_as_it_trained():
    """The one migration place: the flat options of older runs and params files, `dim` and
    `heads` renamed, and options that did not exist yet as those versions trained (not today's
    defaults: no branch heads, no lasso)."""
    from temporal.config import saved_config

    old = {"model": "stan", "streams": "none", "dim": 64, "heads": 2, "eval_mode": "full", "frames": 32,
           "lr": 0.002, "monitor": "accuracy"}
    cfg = saved_config(old)
    assert (cfg.stan.width, cfg.meanpool.hidden, cfg.stan.attention_heads) == (64, 64, 2)
    assert (cfg.eval.mode, cfg.data.frames, cfg.optim.lr, cfg.eval.monitor) == ("full", 32, 0.002, "accuracy")
    assert (cfg.loss.aux_loss, cfg.loss.branch_drop, cfg.loss.event_l1) == (0.0, 0.0, 0.0)
    assert saved_config(cfg.to_dict()) == cfg  # what this version saves reads back as itself
    pool = saved_config({"model": "meanpool", "dim": 32, "dropout": 0.3})  # an old baseline MLP run
    assert (pool.meanpool.hidden, pool.meanpool.dropout) == (32, 0.3)
    assert as_config(old).loss.aux_loss == Config().loss.aux_loss  # options a user passes: today's defaults
    assert cfg.stan.prototypes == "learned" and cfg.loss.lasso == "penalty"
    assert (cfg.stan.event_gaps, cfg.stan.event_norm) == (False, "layer")
    nested = Config().to_dict()
    for path in ("loss.lasso", "stan.prototypes", "stan.event_gaps", "stan.event_norm"):
        part, key = path.split(".")
        del nested[part][key]  # saved before these options
    then = saved_config(nested)  # the lasso was a loss term, the prototypes trained, no gaps, a LayerNorm
    assert (then.loss.lasso, then.stan.prototypes, then.stan.event_gaps, then.stan.event_norm) == \
        ("penalty", "learned", False, "layer")
    now = Config()
    assert (now.loss.lasso, now.stan.prototypes, now.stan.event_gaps, now.stan.event_norm) == \
        ("proximal", "fitted", True, "centre")
