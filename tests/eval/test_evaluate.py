"""`findap-jax eval` end to end on a tiny model: outputs, merging, errors, charts."""
import json

import pytest

from findap_jax.cli import main
from findap_jax.eval.evaluate import parse_tasks

CONFIG = "configs/eval/fineval.py"


@pytest.fixture(scope="module")
def model_dir(tiny_chat_model):
    return tiny_chat_model


def _eval(model_dir, out, *extra):
    return main(["eval", f"--config={CONFIG}", f"--config.model={model_dir}", f"--config.output_dir={out}",
                 "--config.limit=6", "--config.max_new_tokens=4", *extra])


def test_eval_writes_results_predictions_and_report(model_dir, tmp_path):
    out = tmp_path / "run"
    assert _eval(model_dir, out, "--config.tasks=fpb,cfa_mini,finqa_mini,cfa_mini:loglik") == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"fpb", "cfa_mini", "finqa_mini", "cfa_mini:loglik"}
    assert res["fpb"]["n"] == 6 and res["fpb"]["mode"] == "loglik" and 0 <= res["fpb"]["accuracy"] <= 1
    assert {"macro_f1", "mcc", "accuracy_norm", "examples_per_s"} <= set(res["fpb"])
    assert res["cfa_mini"]["mode"] == "generate" and "no_answer" in res["cfa_mini"]
    assert "numeric_match" in res["finqa_mini"]
    preds = [json.loads(line) for line in (out / "predictions" / "fpb.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and len(preds[0]["loglik"]) == 3 and preds[0]["id"] == "fpb5"
    assert preds[0]["score"] == float(preds[0]["pred"] == preds[0]["gold"])
    assert (out / "predictions" / "cfa_mini@loglik.jsonl").is_file()
    acc = sum(p["score"] for p in preds) / 6
    assert res["fpb"]["accuracy"] == pytest.approx(acc)
    report = (out / "report.md").read_text()
    assert "| similar | tasks | fpb | accuracy |" in report and "| novel | reasoning | cfa_mini |" in report
    assert "| novel | concepts | — |" in report

    # a second run of one task merges: the others keep their numbers
    assert _eval(model_dir, out, "--config.tasks=fpb", "--config.limit=3") == 0
    res2 = json.loads((out / "results.json").read_text())
    assert res2["fpb"]["n"] == 3 and res2["finqa_mini"] == res["finqa_mini"]

    other = tmp_path / "other"
    assert _eval(model_dir, other, "--config.tasks=fpb", f"--config.compare={out}") == 0
    assert (other / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["compare", str(out), str(other), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_eval_errors(model_dir, tmp_path, capsys):
    assert _eval(model_dir, tmp_path / "x", "--config.tasks=fpb:generate,nope") == 2
    assert "unknown eval task 'nope'" in capsys.readouterr().err
    assert _eval(model_dir, tmp_path / "x", "--config.tasks=finqa_mini:loglik") == 2
    assert "finqa_mini has no 'loglik' mode" in capsys.readouterr().err
    assert main(["eval", f"--config={CONFIG}", f"--config.model={model_dir}"]) == 2
    assert "output_dir: required" in capsys.readouterr().err
    assert _eval(model_dir, tmp_path / "x", "--config.taks=fpb") == 2
    assert "taks" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "query": "q", "choices": ["a", "b"], "gold": 5}\n')
    assert _eval(model_dir, tmp_path / "x", "--config.tasks=fpb", "--config.files={'fpb': '%s'}" % bad) == 2
    assert f"{bad}:1: field 'gold': 5 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "x" / "results.json").exists()
    assert _eval(model_dir, tmp_path / "x", "--config.tasks=fpb", "--config.files={'fbp': 'x.jsonl'}") == 2
    assert "files: 'fbp' is not among the tasks run" in capsys.readouterr().err


def test_parse_tasks_keys():
    keys = [k for k, _, _ in parse_tasks("fpb, cfa_mini:loglik ,finqa_mini:generate")]
    assert keys == ["fpb", "cfa_mini:loglik", "finqa_mini"]


def test_eval_reads_a_training_workdir(model_dir, tmp_path):
    """A `findap-jax train` workdir evaluates its final export (same scores as the source)."""
    from findap_jax import load_pretrained
    from findap_jax.checkpoints import save_pretrained
    model, tok = load_pretrained(model_dir)
    save_pretrained(model, tok, tmp_path / "work" / "final", to="orbax")
    assert _eval(tmp_path / "work", tmp_path / "a", "--config.tasks=fpb", "--config.limit=4") == 0
    assert _eval(model_dir, tmp_path / "b", "--config.tasks=fpb", "--config.limit=4") == 0
    a, b = (json.loads((tmp_path / d / "predictions" / "fpb.jsonl").read_text().splitlines()[0]) for d in "ab")
    assert a["loglik"] == b["loglik"]


def test_every_registered_task_runs(model_dir, tmp_path):
    from findap_jax.eval.tasks import TASKS
    specs = [f"{name}:{mode}" for name, t in TASKS.items() for mode in t.modes]
    assert _eval(model_dir, tmp_path / "all", f"--config.tasks={','.join(specs)}", "--config.limit=3") == 0
    res = json.loads((tmp_path / "all" / "results.json").read_text())
    assert len(res) == len(specs)
    for key, r in res.items():
        assert r["n"] == 3 and 0.0 <= r[r["primary"]] <= 1.0, key


def test_results_of_another_model_are_dropped_not_merged(tmp_path):
    from findap_jax.eval.evaluate import write_outputs
    logs = []
    write_outputs(tmp_path, {"fpb": {"accuracy": 0.2, "n": 4}, "cfa_mini": {"accuracy": 0.5, "n": 4}}, {},
                  model="A", log=logs.append)
    merged = write_outputs(tmp_path, {"fpb": {"accuracy": 0.3, "n": 4}}, {}, model="A", log=logs.append)
    assert merged == {"fpb": {"accuracy": 0.3, "n": 4, "model": "A"}, "cfa_mini": {"accuracy": 0.5, "n": 4, "model": "A"}}
    merged = write_outputs(tmp_path, {"fpb": {"accuracy": 0.9, "n": 4}}, {}, model="B", log=logs.append)
    assert merged == {"fpb": {"accuracy": 0.9, "n": 4, "model": "B"}}   # A's cfa_mini is not B's
    assert logs == [f"{tmp_path}/results.json: dropping cfa_mini, evaluated on another model (or its files changed)"]
    assert "cfa_mini" not in (tmp_path / "report.md").read_text()
