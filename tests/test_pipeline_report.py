import json

from pipeline.report import qualify, render, table


def test_report_puts_baselines_beside_stan_and_only_changed_params():
    # the rows dvc.api.exp_show() gives for two label sets (file-prefixed metric names)
    exps = [
        {"Experiment": None, "rev": "workspace", "temporal.fusion": "cross", "temporal.dim": 128,
         "metrics/order/stan.json:accuracy": 1.0, "metrics/order/baseline.json:linear.accuracy": 0.5,
         "metrics/order/baseline.json:mlp.accuracy": 0.56, "metrics/content/stan.json:accuracy": 0.9},
        {"Experiment": "sandy-ally", "rev": "756de0d", "temporal.fusion": "sum", "temporal.dim": 128,
         "metrics/order/stan.json:accuracy": 0.75, "metrics/order/baseline.json:linear.accuracy": 0.5},
    ]
    header, body = table(exps)
    assert header == ["experiment", "temporal.fusion", "content: stan accuracy", "order: stan accuracy",
                      "order: linear accuracy", "order: mlp accuracy"]
    assert body[1] == ["sandy-ally (756de0d)", "sum", "-", "0.750", "0.500", "-"]
    first_row = render(header, body, markdown=True).splitlines()[2]
    assert first_row.startswith("| workspace | cross | 0.900 | 1.000")


def test_report_reads_unprefixed_names_of_a_single_label_set():
    exps = [{"rev": "workspace", "accuracy": 0.8, "linear.accuracy": 0.5, "best_epoch": 3}]
    header, body = table(exps)
    assert header == ["experiment", "test: stan accuracy", "test: linear accuracy"]
    assert body == [["workspace", "0.800", "0.500"]]


def test_report_names_a_subfolder_pipelines_label_sets_and_can_show_it_alone():
    exps = [{"rev": "workspace", "metrics/order/stan.json:accuracy": 1.0,
             "eventbench/metrics/where/stan.json:r2": 0.99,
             "eventbench/metrics/where/baseline.json:linear.r2": -0.3}]
    header, body = table(exps)
    assert header == ["experiment", "eventbench/where: stan r2", "eventbench/where: linear r2",
                      "order: stan accuracy"]
    assert body == [["workspace", "0.990", "-0.300", "1.000"]]
    assert table(exps, "eventbench")[0] == header[:3]
    assert table(exps, ".") == (["experiment", "order: stan accuracy"], [["workspace", "1.000"]])


def test_a_metric_dvc_leaves_unprefixed_gets_its_file_back(tmp_path):
    """DVC names `r2` without its file when only one file has it: the report must still say whose."""
    for path, metrics in {"metrics/order/stan.json": {"accuracy": 1.0, "loss": 0.1},
                          "eventbench/metrics/where/stan.json": {"r2": 0.9, "loss": 0.2},
                          "eventbench/metrics/where/baseline.json": {"linear": {"r2": -0.3}}}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(metrics))
    exps = [{"rev": "workspace", "r2": 0.9, "linear.r2": -0.3, "accuracy": 1.0,
             "metrics/order/stan.json:loss": 0.1, "eventbench/metrics/where/stan.json:loss": 0.2}]
    header, body = table(qualify(exps, tmp_path))
    assert header == ["experiment", "eventbench/where: stan r2", "eventbench/where: linear r2",
                      "order: stan accuracy"]
    assert body == [["workspace", "0.900", "-0.300", "1.000"]]
