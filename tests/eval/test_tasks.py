"""Eval task files: bundled sets load whole and consistent; bad rows fail with file:line: field."""
import json

import pytest

from findap_jax.data.records import RecordError
from findap_jax.eval.tasks import TASKS, get_task, load_rows


def test_bundled_tasks_load_every_row():
    assert len(load_rows(get_task("fpb"))) == 996
    cfa = load_rows(get_task("cfa_mini"))
    fin = load_rows(get_task("finqa_mini"))
    assert (len(cfa), len(fin)) == (30, 25)
    for r in cfa:
        assert r["choices"] == ["A", "B", "C"] and r["answer"] == "ABC"[r["gold"]]
        assert f"\n{r['answer']}. " in r["query"]
    for r in fin:   # the written answers are what the stored programs compute
        assert round(eval(r["program"], {"__builtins__": {}}), 2) == pytest.approx(float(r["answer"]))


def test_fpb_labels_and_balance():
    rows = load_rows(get_task("fpb"))
    assert {tuple(r["choices"]) for r in rows} == {("negative", "neutral", "positive")}
    counts = [sum(r["gold"] == g for r in rows) for g in range(3)]
    assert min(counts) > 50 and sum(counts) == 996


def test_every_task_prompt_formats():
    for task in TASKS.values():
        row = load_rows(task, limit=1)[0]
        for mode in task.modes:
            assert row["query"] in task.prompt(mode, row)


def _write(tmp_path, rows, name="bad.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


GOOD = {"id": "a", "query": "Q?", "answer": "neutral", "choices": ["negative", "neutral"], "gold": 1}


@pytest.mark.parametrize("bad,field", [
    ({k: v for k, v in GOOD.items() if k != "gold"}, "field 'gold': missing"),
    (dict(GOOD, gold=2), "field 'gold': 2 is out of range for 2 choices"),
    (dict(GOOD, gold="1"), "field 'gold': expected an integer"),
    (dict(GOOD, choices=[]), "field 'choices': expected a non-empty list"),
    (dict(GOOD, choices=["x", ""]), "field 'choices': every choice"),
    (dict(GOOD, query=""), "field 'query': empty"),
    ({k: v for k, v in GOOD.items() if k != "id"}, "field 'id': missing"),
    ('{"id": "b", "query": "trunc', "invalid JSON"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad, field):
    p = _write(tmp_path, [GOOD, dict(GOOD, id="x2"), bad])
    with pytest.raises(RecordError) as e:
        load_rows(get_task("fpb"), files=str(p))
    assert str(e.value).startswith(f"{p}:3: ") and field in str(e.value)


def test_duplicate_ids_and_missing_answer(tmp_path):
    p = _write(tmp_path, [GOOD, GOOD])
    with pytest.raises(RecordError, match=r":2: field 'id': 'a' repeats .*:1"):
        load_rows(get_task("fpb"), files=str(p))
    p = _write(tmp_path, [{"id": 1, "query": "q"}], "num.jsonl")
    with pytest.raises(RecordError, match=r"num.jsonl:1: field 'answer'"):
        load_rows(get_task("finqa_mini"), files=str(p))
    p = _write(tmp_path, [{"id": 1, "query": "q", "answer": "3"}, {"id": 2, "query": "q", "answer": "n/a"}], "na.jsonl")
    with pytest.raises(RecordError, match=r"na.jsonl:2: field 'answer': 'n/a' is not a finite number"):
        load_rows(get_task("finqa_mini"), files=str(p))
    for bad in ("nan", "inf", "1_000"):   # float() would take each
        p = _write(tmp_path, [{"id": 1, "query": "q", "answer": bad}], "bad.jsonl")
        with pytest.raises(RecordError, match=rf"bad.jsonl:1: field 'answer': '{bad}' is not a finite number"):
            load_rows(get_task("finqa_mini"), files=str(p))
    with pytest.raises(ValueError, match="limit=-1: must be >= 0"):
        load_rows(get_task("fpb"), limit=-1)


def test_finqa_gold_must_be_a_finite_number_or_yes_no(tmp_path):
    rec = {"id": "r", "pre_text": ["Revenue was 5."], "table": [["a", "1"]], "post_text": [],
           "qa": {"question": "What?", "exe_ans": 5.0}}
    for gold in (None, float("nan"), "five"):
        p = tmp_path / "finqa.json"
        p.write_text(json.dumps([rec, {**rec, "id": "s", "qa": {"question": "Q?", "exe_ans": gold}}]))
        with pytest.raises(RecordError, match=r"finqa\.json\[1\]: field 'qa.exe_ans'"):
            load_rows(get_task("finqa"), files=str(p))


def test_data_dir_and_unknown_task(tmp_path):
    (tmp_path / "finqa").mkdir()
    (tmp_path / "finqa" / "dev.json").write_text(json.dumps(
        [{"id": "r1", "pre_text": ["a"], "post_text": [], "table": [["x", "1"]],
          "qa": {"question": "q?", "exe_ans": 1.0}}]))
    assert [r["id"] for r in load_rows(get_task("finqa"), data_dir=str(tmp_path))] == ["r1"]
    assert len(load_rows(get_task("fpb"), data_dir=str(tmp_path))) == 996   # pkg: files stay put
    with pytest.raises(KeyError, match="unknown eval task 'fbp'"):
        get_task("fbp")
    with pytest.raises(FileNotFoundError, match="no files match"):
        load_rows(get_task("tatqa"), data_dir=str(tmp_path))


def test_seeded_sample_is_a_fixed_representative_subset():
    task = get_task("fpb")
    first = load_rows(task, limit=100)
    a, b = load_rows(task, limit=100, sample_seed=0), load_rows(task, limit=100, sample_seed=0)
    everything = load_rows(task)
    assert [r["id"] for r in a] == [r["id"] for r in b] != [r["id"] for r in first]
    order = {r["id"]: i for i, r in enumerate(everything)}
    assert [order[r["id"]] for r in a] == sorted(order[r["id"]] for r in a)   # file order kept
    share = lambda rows: sum(r["gold"] == 1 for r in rows) / len(rows)       # neutral
    assert abs(share(a) - share(everything)) < 0.12
