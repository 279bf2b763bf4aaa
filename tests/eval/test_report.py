"""Result tables: a missing results.json is named, every FinEval axis gets a row, the
comparison chart needs one label per run."""
import json

import pytest

from findap_jax.eval.report import capability_table, compare_chart, read_results


def test_missing_results_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        read_results(tmp_path)


def _results(tmp_path, name, acc):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps({
        "fpb": {"accuracy": acc, "n": 996, "mode": "loglik", "split": "similar", "capability": "tasks",
                "primary": "accuracy"}}))
    return d


def test_capability_table_fills_every_axis(tmp_path):
    table = capability_table(read_results(_results(tmp_path, "a", 0.237)))
    rows = [r for r in table.splitlines()[2:] if r]
    assert any("| fpb | accuracy | 23.7 | 996 | loglik |" in r for r in rows)
    assert sum("| — |" in r for r in rows) == len(rows) - 1   # the other axes say they hold no task


def test_compare_chart_wants_one_label_per_run(tmp_path):
    runs = [_results(tmp_path, "a", 0.2), _results(tmp_path, "b", 0.5)]
    with pytest.raises(ValueError, match="2 runs"):
        compare_chart(runs, tmp_path / "c.png", labels=["only one"])
    out = compare_chart(runs, tmp_path / "plots" / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_task_a_run_did_not_evaluate_draws_no_bar(tmp_path, monkeypatch):
    import math

    from matplotlib.axes import Axes
    a = _results(tmp_path, "a", 0.2)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps({"cfa_mini:loglik": {"accuracy": 0.5, "n": 30}}))
    bars, real_bar = [], Axes.bar
    monkeypatch.setattr(Axes, "bar", lambda self, xs, vals, *a, **k: bars.append(list(vals)) or real_bar(self, xs, vals, *a, **k))
    compare_chart([a, tmp_path / "b"], tmp_path / "c.png")
    # tasks in order cfa_mini:loglik, fpb: run a has fpb only, run b cfa_mini only
    assert math.isnan(bars[0][0]) and bars[0][1] == pytest.approx(20.0)
    assert bars[1][0] == pytest.approx(50.0) and math.isnan(bars[1][1])
