"""Per-answer-type extraction and scoring on messy generations."""
import pytest

from findap_jax.eval.scoring import example_score, extract, parse_entities
from findap_jax.eval.tasks import get_task

NER_ROW = {"entities": [["SILICON VALLEY BANK", "ORG"], ["California", "LOC"]]}


def test_parse_entities_lines_bullets_and_noise():
    text = ("Here are the entities:\n- SILICON VALLEY BANK, ORG\n2. California (LOC)\n"
            "Bank: ORG\nthe borrower, a company\nNone")
    assert parse_entities(text) == {("SILICON VALLEY BANK", "ORG"), ("California", "LOC"), ("Bank", "ORG")}
    assert parse_entities("None") == set() and parse_entities(None) == set()


def test_ner_partial_span_is_not_a_match():
    task = get_task("finner")
    full = extract(task, NER_ROW, "SILICON VALLEY BANK, ORG\nCalifornia, LOC")
    assert example_score(task, NER_ROW, full) == 1.0
    part = extract(task, NER_ROW, "VALLEY BANK, ORG\nCalifornia, LOC")
    assert example_score(task, NER_ROW, part) == pytest.approx(0.5)   # P 1/2, R 1/2
    assert example_score(task, NER_ROW, extract(task, NER_ROW, "I don't know")) == 0.0
    none = {**NER_ROW, "entities": []}                              # a sentence without entities
    assert example_score(task, none, extract(task, none, "None")) == 1.0
    assert example_score(task, none, extract(task, none, "California, LOC")) == 0.0


def test_tatqa_generation_scored_by_official_rules():
    task = get_task("tatqa")
    row = {"gold_answer": -22.22, "scale": "percent", "answer_type": "arithmetic"}
    assert example_score(task, row, extract(task, row, "Change = (a-b)/b.\nAnswer: -22.22%")) == 1.0
    assert example_score(task, row, extract(task, row, "Answer: -22.22 million")) == 0.0
    assert example_score(task, row, extract(task, row, "")) == 0.0
    neg = {"gold_answer": -1496.5, "scale": "million", "answer_type": "arithmetic"}
    assert example_score(task, neg, extract(task, neg, "Answer: (1,496.5) million")) == 1.0
    span = {"gold_answer": ["(2,085)"], "scale": "", "answer_type": "span"}
    assert extract(task, span, "Answer: (2,085)") == ["(2,085)", ""]
    multi = {"gold_answer": ["2019", "2018"], "scale": "", "answer_type": "multi-span"}
    assert example_score(task, multi, extract(task, multi, "Answer: 2018 | 2019")) == 1.0


def test_finqa_percent_aware_and_yes_no():
    task = get_task("finqa")
    row = {"exe_ans": 0.56197}
    assert example_score(task, row, extract(task, row, "25048 / 44572 = 0.562, so Answer: 56.2%")) == 1.0
    assert example_score(task, row, extract(task, row, "Answer: 0.56197")) == 1.0
    assert example_score(task, row, extract(task, row, "Answer: 45%")) == 0.0
    assert example_score(task, row, extract(task, row, "The ratio is 56%.\nAnswer: 56%")) == 1.0
    assert example_score(task, {"exe_ans": 12.34}, extract(task, row, "Answer: 12")) == 1.0
    yn = {"exe_ans": "no"}
    assert example_score(task, yn, extract(task, yn, "288 is less than 468. Answer: no")) == 1.0
    assert example_score(task, yn, extract(task, yn, "unclear")) == 0.0
    assert example_score(task, yn, extract(task, yn, "Answer: No, 2019 revenue (5.2) was lower than 2018 (6.1).")) == 1.0
    aside = "Answer: 56.2%\nNote: the answer is rounded to 1 decimal place."
    assert example_score(task, row, extract(task, row, aside)) == 1.0
    assert example_score(task, {"exe_ans": -12.0}, extract(task, row, "Answer: $-12")) == 1.0
