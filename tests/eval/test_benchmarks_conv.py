"""ConvFinQA (one row per turn, gold history, FinQA execution accuracy) and FinanceBench (open
QA with evidence: ROUGE-L, numbers of the gold, LLM-judge mode) on the bundled real files;
scoring cases checked by hand against the data; malformed files fail with file and line."""
import filecmp
import json
from pathlib import Path

import pytest

from findap_jax.config import apply_override
from findap_jax.data.records import RecordError
from findap_jax.defaults import eval_config, eval_tasks_config
from findap_jax.eval.benchmarks import read_convfinqa, read_financebench, run_program
from findap_jax.eval.evaluate import evaluate_model, parse_tasks
from findap_jax.eval.openqa import gold_numbers_found, judge_answers, numbers, parse_verdict
from findap_jax.eval.runner import run_task
from findap_jax.eval.scoring import example_score, extract, task_metrics
from findap_jax.eval.tasks import BUNDLED, get_task, load_rows

SHARED = Path(__file__).parents[2].parent / "shared" / "data"
CONV, FB = get_task("convfinqa"), get_task("financebench")


@pytest.fixture(scope="module")
def conv():
    return {r["id"]: r for r in load_rows(CONV)}


@pytest.fixture(scope="module")
def fb():
    return {r["id"]: r for r in load_rows(FB)}


def test_every_turn_and_question_kept(conv, fb):
    assert len(conv) == 782                                  # no turn skipped
    convs = {}
    for r in conv.values():
        convs.setdefault(r["conversation_id"], []).append(r["turn"])
        assert r["id"] == f"{r['conversation_id']}:turn{r['turn']}"
    assert len(convs) == 222 and all(t == list(range(len(t))) for t in convs.values())
    assert len(fb) == 59 and all(k == r["financebench_id"] and k.startswith("financebench_id_") for k, r in fb.items())
    assert sum(isinstance(r["exe_ans"], str) for r in conv.values()) == 2     # the yes/no turns
    assert sum(gold_numbers_found(r["answer"], "") is not None for r in fb.values()) == 43


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/data beside the repository")
def test_bundled_copies_match_the_shared_data_dir():
    for rel in ("convfinqa_pot/convfinqa_dev.json", "convfinqa_pot/LICENSE", "convfinqa_pot/SOURCE.md",
                "financebench/financebench_open_source.jsonl", "financebench/SOURCE.md",
                "financebench/financebench_document_information.jsonl"):
        assert filecmp.cmp(BUNDLED / rel, SHARED / rel, shallow=False), rel
    assert [r["id"] for r in load_rows(CONV, data_dir=str(SHARED))][:3] == [
        "Single_MRO/2007/page_134.pdf-1:turn0", "Single_MRO/2007/page_134.pdf-1:turn1",
        "Single_MRO/2007/page_134.pdf-1:turn2"]
    assert len(load_rows(FB, data_dir=str(SHARED))) == 59


def test_convfinqa_turn_carries_the_gold_history(conv):
    first, last = conv["Single_MRO/2007/page_134.pdf-1:turn0"], conv["Single_MRO/2007/page_134.pdf-1:turn4"]
    assert "Conversation so far" not in first["query"] and first["exe_ans"] == 60.94
    # program "x0 = 60.94 - 25.14; ans = x0 / 25.14"; the conversation's stored answer is 1.42403
    assert last["exe_ans"] == 1.42403 and last["program"].startswith("x0 = 60.94 - 25.14")
    assert last["history"] == [["what was the weighted average exercise price per share in 2007?", "60.94"],
                               ["and what was it in 2005?", "25.14"],
                               ["what was, then, the change over the years?", "35.8"],
                               ["what was the weighted average exercise price per share in 2005?", "25.14"]]
    q = last["query"]
    assert "| $ 60.94 | $ 37.84 | $ 25.14" in q and "Q: what was, then, the change over the years?\nA: 35.8\n" in q
    assert q.endswith("Question: and how much does that change represent in relation to this 2005 "
                      "weighted average exercise price?")
    # a turn whose program is a percent literal ("ans = 15.7%"): gold 0.157, shown as written
    mas = conv["Double_MAS/2018/page_35.pdf:turn1"]
    assert conv["Double_MAS/2018/page_35.pdf:turn0"]["exe_ans"] == 0.157
    assert mas["history"] == [["what was the operating profit margin as adjusted in 2017?", "15.7%"]]


@pytest.mark.parametrize("rid,reply,score", [
    # 35.8 / 25.14 = 1.42403: a percent, right in either unit at the precision written
    ("Single_MRO/2007/page_134.pdf-1:turn4", "35.8 / 25.14 = 1.424\nAnswer: 142.4%", 1.0),
    ("Single_MRO/2007/page_134.pdf-1:turn4", "Answer: 1.42", 1.0),
    ("Single_MRO/2007/page_134.pdf-1:turn4", "Answer: 143%", 0.0),
    ("Single_MRO/2007/page_134.pdf-1:turn4", "Answer: 1", 0.0),            # one significant digit
    ("Double_MAS/2018/page_35.pdf:turn0", "The margin was 15.7%.\nAnswer: 15.7%", 1.0),
    ("Double_MAS/2018/page_35.pdf:turn0", "Answer: 15.8%", 0.0),
    ("Double_MAS/2018/page_35.pdf:turn2", "15.7 - 15.1 = 0.6\nAnswer: 0.6", 1.0),   # gold 0.006
    ("Double_PNC/2013/page_207.pdf:turn1", "36197 is less than 345059.\nAnswer: no", 1.0),
    ("Double_PNC/2013/page_207.pdf:turn1", "Answer: yes", 0.0),
])
def test_convfinqa_scored_with_the_finqa_rule(conv, rid, reply, score):
    row = conv[rid]
    assert example_score(CONV, row, extract(CONV, row, reply)) == score


def test_run_program():
    assert run_program("x0 = 60.94 - 25.14; ans = x0 / 25.14") == 1.42403
    assert run_program("ans = 13.4%") == 0.134 and run_program("ans = -(2 - 5) * 2") == 6.0
    assert run_program("ans = 178.93 > 105.34") == "yes" and run_program("ans = 36197 > 345059") == "no"
    for bad, why in [("ans = 1 / 0", "ZeroDivisionError"), ("import os", "only assignments"),
                     ("ans = __import__('os')", "unsupported"), ("ans = x0 + 1", "before it is assigned"),
                     ("x0 = 1", "no `ans"), ("ans = 1,234", "unsupported"), ("ans = (", "not a program"),
                     ("ans = 2 ** 10", "unsupported"), ("ans = 'a'", "unsupported")]:
        with pytest.raises(ValueError, match=why):
            run_program(bad)


@pytest.mark.parametrize("fid,reply,found", [
    ("financebench_id_07966", "Capex averaged 1.9% of revenue.\nAnswer: 1.9%", True),   # gold "1.9%"
    ("financebench_id_07966", "Answer: 1.87%", True),        # rounds to the gold's precision
    ("financebench_id_07966", "Answer: 0.019", True),        # a fraction for a percent gold
    ("financebench_id_07966", "Answer: 2.0%", False),
    ("financebench_id_03882", "Answer: Amcor's net AR was $1,616 million.", True),        # "$1616.00"
    ("financebench_id_02987", "Answer: 24", False),          # gold "24.26": less precise is wrong
    ("financebench_id_00299", "Answer: Corporate, with net revenue of -$473 million", True),
    ("financebench_id_00299", "Answer: Corporate, $473 million", False),       # sign matters
    ("financebench_id_01981", "Answer: Yes", None),          # gold "Yes": no number to check
    ("financebench_id_01351", "It dropped from 24.6% to 21.6%.", True),        # years are not numbers
    ("financebench_id_01351", "Answer: It dropped 3 points to 21.6%.", False),  # every gold number
])
def test_financebench_numbers_hand_checked(fb, fid, reply, found):
    row = fb[fid]
    assert gold_numbers_found(row["answer"], extract(FB, row, reply)) is found


def test_financebench_numbers_of_a_text():
    assert numbers("from 982 stores in Q2 FY 2023 to 969 by FY2024, down 1.32%", gold=True) == [
        ("982", False), ("969", False), ("1.32", True)]
    assert numbers("(1) pricing ($4.3 bn) and (2) 777X, 10K, $2,018mn", gold=True) == [
        ("4.3", False), ("2018", False)]


def test_financebench_metrics(fb):
    rows = [fb["financebench_id_07966"], fb["financebench_id_01981"], fb["financebench_id_02987"]]
    replies = ["Answer: 1.9%", "Yes, they did.\nAnswer: **Yes**", "I cannot tell."]
    preds = [{"pred": extract(FB, r, t), "prediction": t} for r, t in zip(rows, replies)]
    assert [p["pred"] for p in preds] == ["1.9%", "Yes", "I cannot tell."]
    assert example_score(FB, rows[0], preds[0]["pred"]) == 1.0     # ROUGE-L of the answer span
    m = task_metrics(FB, rows, preds, "generate")
    assert m["n_numeric"] == 2 and m["numeric_match"] == 0.5 and m["no_answer"] == 0.0
    assert m["rougeL"] == pytest.approx(2 / 3)
    assert set(m) >= {"rouge1", "rouge2", "rougeL"}
    assert "numeric_match" not in task_metrics(FB, rows[1:2], preds[1:2], "generate")   # no numeric gold


@pytest.mark.parametrize("reply,verdict", [
    ('{"Correctness": "correct", "Justification": "Same number."}', "correct"),
    ("```json\n{'Correctness': 'Incorrect', 'Justification': 'no'}\n```", "wrong"),
    ('Sure! {"correctness": "WRONG"} Hope this helps.', "wrong"),
    ('{"Correctness": "wrong", "Justification": "The proposed answer gives', "wrong"),   # cut reply
    ("Correctness: correct", "correct"),
    ("**Correct.** Both say 1.9%.", "correct"),
    ("The proposed answer is partly right.", None),
    ('{"Correctness": "partially correct"}', None),
    ("", None),
    (None, None),
])
def test_judge_verdicts(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_judge_mode_counts_unparseable_replies_as_wrong(fb):
    rows = [fb["financebench_id_07966"], fb["financebench_id_01981"], fb["financebench_id_02987"],
            fb["financebench_id_03882"]]
    answers = ["1.9%", "No", "I cannot tell", None]
    asked = []

    def judge(prompts):
        asked.extend(prompts)
        return ['{"Correctness": "correct", "Justification": "ok"}', "wrong", "I am not sure."]

    verdicts = judge_answers(judge, rows, answers)
    assert [v["judge"] for v in verdicts] == ["correct", "wrong", None, "wrong"]
    assert len(asked) == 3 and verdicts[3]["judge_reply"] is None      # no answer: not asked
    assert "Reference answer:\n1.9%\n\nProposed answer:\n1.9%" in asked[0] and rows[0]["question"] in asked[0]
    preds = [{"pred": a, "prediction": a or "", **v} for a, v in zip(answers, verdicts)]
    m = task_metrics(FB, rows, preds, "judge")
    assert m["judge_accuracy"] == 0.25 and m["judge_unparsed"] == 1 and m["no_answer"] == 0.25
    with pytest.raises(ValueError, match="2 replies for 3 prompts"):
        judge_answers(lambda p: ["correct"] * 2, rows, answers)


def test_judge_config_is_validated(fb):
    assert [k for k, _, _ in parse_tasks("financebench,financebench:judge")] == ["financebench", "financebench:judge"]
    with pytest.raises(ValueError, match="no task runs in judge mode"):
        evaluate_model(None, None, eval_tasks_config(tasks="financebench", judge="/some/judge"))
    with pytest.raises(FileNotFoundError, match="no_such_judge"):   # fails before any task runs
        evaluate_model(None, None, eval_tasks_config(tasks="financebench:judge", judge="/no_such_judge"))
    with pytest.raises(ValueError, match="no 'judge' mode"):
        parse_tasks("convfinqa:judge")
    with pytest.raises(ValueError, match="judge mode needs a judge"):
        run_task(None, None, FB, [fb["financebench_id_07966"]], mode="judge", chat=False)
    cfg = eval_config()
    apply_override(cfg, "judge", "/models/judge")
    assert cfg.judge == "/models/judge"
    with pytest.raises(KeyError, match="unknown config key 'judge_model'"):
        apply_override(cfg, "judge_model", "x")


def test_files_overridable(tmp_path):
    (tmp_path / "convfinqa_pot").mkdir()
    (tmp_path / "convfinqa_pot" / "convfinqa_dev.json").write_text(json.dumps([
        {"id": "c1", "text": "Revenue grew.", "table": "- | 2020 | 2019\nrevenue | 12 | 10",
         "questions": ["what was revenue in 2020?", "and the change from 2019?"],
         "programs": ["ans = 12", "ans = 12 - 10"], "answer": 2.0}]))
    rows = load_rows(CONV, data_dir=str(tmp_path))
    assert [r["id"] for r in rows] == ["c1:turn0", "c1:turn1"] and rows[1]["history"] == [["what was revenue in 2020?", "12"]]
    fb_file = tmp_path / "mine.jsonl"
    fb_file.write_text(json.dumps({"financebench_id": "x1", "company": "Acme", "question": "Revenue?",
                                   "answer": "$5", "evidence": [{"evidence_text": "Revenue was $5."}]}) + "\n")
    row = load_rows(FB, files=str(fb_file))[0]
    assert row["id"] == "x1" and "Evidence 1 (filing):\nRevenue was $5." in row["query"]


def test_bad_files_name_file_and_line(tmp_path):
    src = (BUNDLED / "convfinqa_pot" / "convfinqa_dev.json").read_text()
    cut = tmp_path / "convfinqa_dev.json"
    cut.write_text(src[:len(src) // 2])                   # truncated JSON
    with pytest.raises(RecordError, match=r"convfinqa_dev.json:\d+: invalid JSON"):
        list(read_convfinqa(str(cut)))
    good = {"id": "c1", "text": "t", "table": "a | 1", "questions": ["q0", "q1"],
            "programs": ["ans = 1", "ans = 1 / 0"], "answer": 1.0}
    for patch, msg in [({}, r"\[0\]\.programs\[1\]: 'ans = 1 / 0': ZeroDivisionError"),
                       ({"programs": ["ans = 1", "ans = 2"]}, r"\[0\]\.programs\[1\]: the last program gives 2.0"),
                       ({"programs": ["ans = 1"]}, r"\[0\]: 2 questions but 1 programs"),
                       ({"questions": ["q0", 7], "programs": ["ans = 1", "ans = 1"]}, r"\[0\]\.questions\[1\]"),
                       ({"table": None}, r"\[0\]: fields 'text' and 'table' must be strings")]:
        cut.write_text(json.dumps([{**good, **patch}]))
        with pytest.raises(RecordError, match=msg):
            list(read_convfinqa(str(cut)))
    cut.write_text(json.dumps([{k: v for k, v in good.items() if k != "programs"}]))
    with pytest.raises(RecordError, match=r"convfinqa_dev.json\[0\]: field 'programs': missing"):
        list(read_convfinqa(str(cut)))

    lines = (BUNDLED / "financebench" / "financebench_open_source.jsonl").read_text().splitlines()
    jl = tmp_path / "fb.jsonl"
    jl.write_text("\n".join(lines[:2] + [lines[2][:500]]) + "\n")      # third record cut off
    with pytest.raises(RecordError, match=r"fb.jsonl:3: invalid JSON"):
        list(read_financebench(str(jl)))
    rec = json.loads(lines[0])
    for patch, msg in [({"evidence": []}, r"fb.jsonl:1: field 'evidence'"),
                       ({"evidence": [{"doc_name": "x"}]}, r"fb.jsonl:1: field 'evidence'\[0\]: no evidence_text"),
                       ({"answer": " "}, r"fb.jsonl:1: field 'answer'"),
                       ({"financebench_id": None}, r"fb.jsonl:1: field 'financebench_id'")]:
        jl.write_text(json.dumps({**rec, **patch}) + "\n")
        with pytest.raises(RecordError, match=msg):
            list(read_financebench(str(jl)))
    jl.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(RecordError, match=r"fb.jsonl:2: field 'id': 'financebench_id_02987' repeats"):
        load_rows(FB, files=str(jl))
