"""The ablation table over recipe workdirs: the right eval per arm, the base row, losses and
preference rewards from metrics.jsonl, and located errors for damaged files."""
import json

import pytest

from findap_jax.ablations import ablation_table, read_arm, write_ablation_report
from findap_jax.cli import main


def _eval(wd, label, acc, ended):
    d = wd / "eval" / label
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"fpb": {"accuracy": acc, "macro_f1": acc / 2, "n": 400,
                                                        "primary": "accuracy", "mode": "loglik"},
                                                "finqa": {"execution_accuracy": 0.01, "n": 80,
                                                          "primary": "execution_accuracy"}}))
    (wd / f".eval_{label}.done").write_text(json.dumps({"seconds": 1.0, "chat_check": {"n": 8, "ended": ended}}))


def _train(wd, stage, losses, pref=False):
    (wd / stage).mkdir(parents=True)
    rows = []
    for i, loss in enumerate(losses, 1):
        r = {"step": i, "loss": loss}
        if pref:
            r.update({"rewards/chosen": 0.01 * i, "rewards/rejected": -0.1 * i})
        rows.append(json.dumps(r))
    (wd / stage / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (wd / f".{stage}.done").write_text(json.dumps({"seconds": 12.0, "final": str(wd / stage / "final")}))


@pytest.fixture
def arms(tmp_path):
    joint = tmp_path / "joint"
    _eval(joint, "base", 0.248, 6)
    _train(joint, "cpt_it", [2.5, 2.0, 1.5])
    _eval(joint, "cpt_it", 0.372, 8)
    seq = tmp_path / "sequential"
    _train(seq, "cpt_it", [2.6, 2.4])
    _eval(seq, "cpt_it", 0.20, 7)
    _train(seq, "cpt_it_2", [1.9, 1.7])
    _eval(seq, "cpt_it_2", 0.30, 8)
    rpo = tmp_path / "rpo"
    _train(rpo, "rpo", [0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25], pref=True)
    _eval(rpo, "rpo", 0.31, 8)
    return [joint, seq, rpo]


def test_an_arm_evaluated_only_on_its_base_model_keeps_its_row(tmp_path):
    """Its stage trained, its eval not yet run: the row says `base` and shows the losses."""
    a, b = tmp_path / "a", tmp_path / "b"
    _eval(a, "base", 0.25, 8)
    _train(a, "cpt_it", [2.0, 1.0])
    _eval(a, "cpt_it", 0.40, 8)
    _eval(b, "base", 0.25, 8)
    _train(b, "cpt_it", [2.2, 1.1])
    for order in ([a, b], [b, a]):
        rows = ablation_table([read_arm(w) for w in order]).splitlines()
        assert any(r.startswith("| b | base | 1.0 | 25.0 |") and "cpt_it 2.200 → 1.100 (2 steps)" in r for r in rows)


def test_table_takes_each_arms_last_eval_and_one_base_row(arms):
    table = ablation_table([read_arm(a) for a in arms])
    lines = table.splitlines()
    assert lines[0].startswith("| arm | evaluated after | finqa execution_accuracy | fpb accuracy | "
                               "fpb macro_f1 | chat replies")
    assert lines[2] == "| base model | base | 1.0 | 24.8 | 12.4 | 6/8 | — | — |"
    assert lines[3].startswith("| joint | cpt_it | 1.0 | 37.2 | 18.6 | 8/8 | cpt_it 2.500 → 1.500 (3 steps) |")
    # the sequential arm is reported after its second stage, with both stages' losses
    assert lines[4].startswith("| sequential | cpt_it_2 | 1.0 | 30.0 | 15.0 | 8/8 | cpt_it 2.600 → 2.400 (2 steps); "
                               "cpt_it_2 1.900 → 1.700 (2 steps) |")
    # mean of the last quarter (steps 7 and 8) of the rewards against the reference
    assert lines[5].endswith("| rpo 0.700 → 0.250 (8 steps) | rpo: +0.075 / -0.750 |")
    assert "n per task: finqa 80, fpb 400." in table


def test_cli_writes_the_report(arms, tmp_path):
    out = tmp_path / "report.md"
    assert main(["ablations", *map(str, arms), "--out", str(out)]) == 0
    assert out.read_text().startswith("# Ablation arms\n") and "| joint | cpt_it | 1.0 | 37.2 |" in out.read_text()


def test_damaged_metrics_line_is_located_and_nothing_is_written(arms, tmp_path):
    path = arms[0] / "cpt_it" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"step": 4, "loss"\n')
    out = tmp_path / "report.md"
    with pytest.raises(ValueError, match=r"metrics\.jsonl:4: invalid JSON"):
        write_ablation_report(arms, out)
    assert not out.exists()


def test_workdir_without_finished_stages_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no finished recipe stage"):
        read_arm(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing: not a directory"):
        read_arm(tmp_path / "missing")
