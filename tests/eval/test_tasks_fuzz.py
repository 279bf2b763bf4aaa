"""Fuzzing eval-row validation: any row (or any bytes in a task file) is either a row the
scorers can use or a RecordError naming the field (and file:line) -- nothing else."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from findap_jax.data.records import RecordError
from findap_jax.eval.tasks import EvalTask, load_rows, validate_row
from tests.fuzz_strategies import FUZZ, near_misses
from tests.fuzz_strategies import json_values as json_values_of


json_values = json_values_of(8)
answers = st.sampled_from(["12", "1,234.5", "-3%", "1e3", "nan", "inf", "½", "٣", " ", "", "x1", "1_000", "neutral"])
fields = {"id": json_values | st.integers(0, 5).map(str), "query": st.text(max_size=8) | json_values,
          "choices": st.lists(st.sampled_from(["A", "B", "C", "", " ", "neutral"]) | json_values, max_size=4)
          | json_values,
          "gold": st.integers(-2, 5) | json_values, "answer": answers | json_values, "text": json_values}
words = st.text(min_size=1, max_size=8).filter(str.strip)
valid = st.fixed_dictionaries(   # a usable row for every answer type (gold may miss the range)
    {"id": st.integers(0, 10**9).map(str) | st.integers(0, 10**9), "query": words,
     "choices": st.lists(words, min_size=2, max_size=4, unique=True), "gold": st.integers(0, 2),
     "answer": answers}, optional={"text": st.text(max_size=8)})



near = near_misses(valid, fields, json_values)
rows = near | st.fixed_dictionaries({}, optional=fields) | json_values


@FUZZ
@given(rows, st.booleans(), st.booleans())
def test_validate_row_gives_a_usable_row_or_a_field_error(rec, needs_choices, numeric):
    try:
        out = validate_row(rec, needs_choices, numeric)
    except RecordError as e:
        assert str(e).startswith(("field '", "expected a JSON object")), e
        return
    assert isinstance(out["query"], str) and out["query"].strip() and isinstance(out["id"], str)
    assert "text" in out
    if needs_choices:
        ch, gold = out["choices"], out["gold"]
        assert ch and all(isinstance(c, str) and c.strip() for c in ch) and len(set(ch)) == len(ch)
        assert type(gold) is int and 0 <= gold < len(ch) and out["answer"] == ch[gold]
    else:
        assert isinstance(out["answer"], str) and out["answer"].strip()
        if numeric:
            assert isinstance(float(out["answer"].replace(",", "").rstrip("%")), float)


def _task(path, answer_type):
    return EvalTask(name="fuzz", files=(str(path),), answer_type=answer_type, split="similar",
                    capability="tasks")


row_lines = rows.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8"))
ODD_LINES = [b"", b"  ", b"\xff", b"\xed\xa0\x80", b"{\"id\": 1", b"[1]", b"\x00", b"[" * 3000,
             b"{\"id\": " + b"9" * 5000 + b"}", b"\xef\xbb\xbf{\"id\": \"1\", \"query\": \"q\", \"answer\": \"1\"}"]
lines = row_lines | st.sampled_from(ODD_LINES) | st.binary(max_size=24)


clean_lines = valid.map(lambda r: json.dumps(r).encode()) | st.sampled_from([b"", b" \t"])


@st.composite
def task_files(draw):
    """Mixed garbage, or (half the time) only usable rows and blank lines: load_rows stops
    at the first bad row, so the success path needs files without one."""
    body = draw(st.lists(clean_lines if draw(st.booleans()) else lines, max_size=10))
    return b"".join(line + draw(st.sampled_from([b"\n", b"\r\n", b"\r"])) for line in body)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_tasks")


@FUZZ
@given(data=task_files(), answer_type=st.sampled_from(["label", "choice", "number", "text"]),
       limit=st.integers(0, 4))
def test_load_rows_gives_rows_or_a_record_error_naming_the_file(fuzz_dir, data, answer_type, limit):
    path = fuzz_dir / "task.jsonl"
    path.write_bytes(data)
    try:
        got = load_rows(_task(path, answer_type), limit=limit)
    except RecordError as e:
        msg = str(e)
        assert msg.startswith(f"{path}:") or msg == f"task fuzz: no rows in {path}", msg
        return
    assert got and (not limit or len(got) <= limit)
    assert len({r["id"] for r in got}) == len(got)
    lines_seen = [int(r["_where"].rsplit(":", 1)[1]) for r in got]
    assert all(r["_where"] == f"{path}:{n}" for r, n in zip(got, lines_seen))
    assert lines_seen == sorted(set(lines_seen))
    for r in got:
        if answer_type == "number":
            float(r["answer"].replace(",", "").rstrip("%"))   # the scorer's parse cannot fail
        elif answer_type in ("label", "choice"):
            assert r["answer"] == r["choices"][r["gold"]]


def test_a_bad_row_names_file_line_and_field(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"id": "1", "query": "q", "answer": "2"}\r\n\r\n{"id": "2", "query": "q", "answer": [1]}\r\n')
    assert len(load_rows(_task(path, "text"))) == 2
    with pytest.raises(RecordError, match=f"{path}:3: field 'answer': '\\[1\\]' is not a finite number"):
        load_rows(_task(path, "number"))
    with pytest.raises(RecordError, match=f"{path}:1: field 'choices'"):
        load_rows(_task(path, "label"))
    path.write_bytes(b'{"id": "1", "query": "q", "answer": ' + b"7" * 5000 + b"}\n")
    with pytest.raises(RecordError, match=f"{path}:1: invalid JSON"):   # was a bare ValueError
        load_rows(_task(path, "number"))
