"""Benchmark converters on the bundled real files: every record kept, labels and answers
carried over; malformed files fail with file and line."""
import json

import pytest

from findap_jax.data.records import RecordError
from findap_jax.eval.benchmarks import (entities, fin5_split, read_conll_ner, read_finner, read_mmlu,
                                        read_tatqa, read_tweets)
from findap_jax.eval.tasks import get_task, load_rows, resolve_files


@pytest.mark.parametrize("task,n", [("tweets_sentiment", 400), ("mmlu_finance", 718), ("finner", 332),
                                    ("tatqa", 1668), ("finqa", 80)])
def test_converters_keep_every_record(task, n):
    rows = load_rows(get_task(task))
    assert len(rows) == n and len({r["id"] for r in rows}) == n


def test_fin5_is_read_whole_and_finner_scores_only_its_held_out_side(tmp_path):
    path = resolve_files(get_task("finner"))[0]
    rows = [r for _, r in read_conll_ner(path)]
    assert len(rows) == 1164 and len({r["id"] for r in rows}) == 1164
    sides = [fin5_split(r["text"]) for r in rows]
    assert (sides.count("train"), sides.count("test")) == (832, 332)
    test_ids = [r["id"] for r in load_rows(get_task("finner"))]
    assert test_ids == [r["id"] for r, s in zip(rows, sides) if s == "test"]
    # a CoNLL file that is not FIN5 (e.g. the official FIN3 test file) is read whole
    other = tmp_path / "test_FIN3.txt"
    other.write_text(open(path, encoding="utf-8").read(), encoding="utf-8")
    assert sum(1 for _ in read_finner(str(other))) == 1164


def test_converted_rows_carry_the_gold():
    tw = load_rows(get_task("tweets_sentiment"))
    assert tw[0]["text"] == "Intelsat cut to Market Perform at Raymond James" and tw[0]["answer"] == "bearish"
    mm = load_rows(get_task("mmlu_finance"))
    assert mm[0]["answer"] == "A" and mm[0]["query"].endswith("rejected when it was false")
    assert {r["subject"] for r in mm} == {"econometrics", "high school macroeconomics",
                                          "high school microeconomics", "professional accounting"}
    ner = load_rows(get_task("finner"))
    assert ner[0]["entities"][:3] == [["SILICON VALLEY BANK", "ORG"], ["Bank", "ORG"], ["California", "LOC"]]
    tq = load_rows(get_task("tatqa"))
    assert sum(r["answer_type"] == "multi-span" for r in tq) == 217
    assert {r["scale"] for r in tq} == {"", "thousand", "million", "billion", "percent"}
    fq = load_rows(get_task("finqa"))
    assert fq[0]["exe_ans"] == pytest.approx(0.56197) and "25048" in fq[0]["query"]


def test_entities_from_io_and_iob_tags():
    tags = [("Bank", "I-ORG"), ("of", "I-ORG"), ("Boston", "I-ORG"), ("and", "O"), ("John", "B-PER"),
            ("Doe", "I-PER"), ("Jane", "B-PER"), ("Roe", "I-PER")]
    assert entities(tags) == [("Bank of Boston", "ORG"), ("John Doe", "PER"), ("Jane Roe", "PER")]


def test_bad_files_name_file_and_line(tmp_path):
    csv = tmp_path / "sent.csv"
    csv.write_text('text,label\n"ok tweet",1\n"missing label"\n')
    with pytest.raises(RecordError, match=r"sent.csv:3: expected 2 columns, got 1"):
        list(read_tweets(str(csv)))
    csv.write_text('text,label\n"ok",7\n')
    with pytest.raises(RecordError, match=r"sent.csv:2: field 'label'"):
        list(read_tweets(str(csv)))
    mm = tmp_path / "econ_test.csv"
    mm.write_text('q1,a,b,c,d,B\nq2,a,b,c,d\n')
    with pytest.raises(RecordError, match=r"econ_test.csv:2: expected 6 columns, got 5"):
        list(read_mmlu(str(mm)))
    conll = tmp_path / "fin.txt"
    conll.write_text("-DOCSTART- -X- O O\n\nThe DT - O\nBank\n")
    with pytest.raises(RecordError, match=r"fin.txt:4: expected 'TOKEN ... TAG' columns"):
        list(read_conll_ner(str(conll)))
    conll.write_text("The DT - O\nBank NNP - I-BANK\n")
    with pytest.raises(RecordError, match=r"fin.txt:2: field 'tag': unknown NER tag 'I-BANK'"):
        list(read_conll_ner(str(conll)))
    tq = tmp_path / "dev.json"
    tq.write_text('[{"table": {"table": [["a"]]},\n "paragraphs": [], "questions": [{"uid": "x"')
    with pytest.raises(RecordError, match=r"dev.json:2: invalid JSON"):
        list(read_tatqa(str(tq)))
    tq.write_text(json.dumps([{"table": {"table": [["a"]]}, "paragraphs": [],
                               "questions": [{"uid": "x", "question": "q"}]}]))
    with pytest.raises(RecordError, match=r"dev.json\[0\].questions\[0\]: field 'answer': missing"):
        list(read_tatqa(str(tq)))
