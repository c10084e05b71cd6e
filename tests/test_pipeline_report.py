from pipeline.report import render, table


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
