"""Fuzzing the record readers: any bytes in a training file give rows, or a RecordError
that names file:line (or a counted skip) -- never another exception type."""
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from findap_jax.data.records import RecordError, SkipCounter, read_records, validate
from tests.fuzz_strategies import FUZZ, near_misses
from tests.fuzz_strategies import json_values as json_values_of

KINDS = ("cpt", "chat", "preference", "cfa")

json_values = json_values_of(10)
roles = st.sampled_from(["system", "user", "assistant", "robot", "", "User"]) | json_values
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": st.text(max_size=10) | json_values}),
                    max_size=3) | json_values
fields = {"text": st.text(max_size=10) | json_values, "messages": messages,
          "prompt": st.text(max_size=10) | json_values, "response": st.text(max_size=10) | json_values,
          "chosen": st.text(max_size=10) | json_values, "rejected": st.text(max_size=10) | json_values,
          "question": st.text(max_size=10), "answer": st.text(max_size=4) | json_values,
          "answer_choices": st.lists(st.text(max_size=4), max_size=3) | json_values,
          "scenario": json_values, "id": json_values}
words = st.text(min_size=1, max_size=10).filter(str.strip)
turn = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=8)})
user_turns = st.builds(lambda a, q: a + [{"role": "user", "content": q}], st.lists(turn, max_size=2), words)
VALID = {   # a valid record of each schema
    "cpt": st.fixed_dictionaries({"text": words}),
    "chat": st.fixed_dictionaries({"prompt": words, "response": words})
    | st.builds(lambda m, a: {"messages": m + [{"role": "assistant", "content": a}]}, user_turns, words),
    "preference": st.fixed_dictionaries({"prompt": words, "chosen": words, "rejected": words})
    | st.fixed_dictionaries({"messages": user_turns, "chosen": words, "rejected": words}),
    "cfa": st.fixed_dictionaries({"question": words, "answer": words, "answer_choices": st.lists(
        words, min_size=1, max_size=3)}, optional={"scenario": words, "id": st.integers(0, 99)}),
}
valid = st.one_of(*VALID.values())


near = near_misses(valid, fields, json_values)
records = near | st.fixed_dictionaries({}, optional=fields) | json_values
record_lines = records.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8"))

ODD_LINES = [b"", b"   ", b"\t", b"\x0c", b"\xef\xbb\xbf{\"text\": \"bom\"}", b"\xff\xfe", b"{\"text\": \"caf\xe9\"}",
             b"\xed\xa0\x80", b"\xc3", b"\x00", b"{\"text\": \"x\"", b"}", b"[", b"null", b"NaN", b"\"str\"",
             b"{\"text\": \"\\ud800\"}", b"{\"text\": " + b"1" * 5000 + b"}", b"[" * 5000,
             b"{\"text\": \"\xe2\x80\xa8\"}", b"{\"text\": 1e999}", b"\xc2\xa0"]
lines = record_lines | st.sampled_from(ODD_LINES) | st.binary(max_size=30)
ends = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def jsonl_files(draw, kind):
    """Mixed garbage, or (half the time) only valid `kind` rows and blank lines."""
    clean = VALID[kind].map(lambda r: json.dumps(r).encode()) | st.sampled_from([b"", b" \t"])
    body = draw(st.lists(clean if draw(st.booleans()) else lines, max_size=12))
    out = b""
    for i, line in enumerate(body):
        out += line + (draw(ends) if i < len(body) - 1 or draw(st.booleans()) else b"")
    return out


def _split_lines(data: bytes) -> list[bytes]:
    """Line n of the file as an editor numbers it (LF, CRLF and lone CR all end a line)."""
    return re.split(rb"\r\n|\r|\n", data)


def _good(kind: str, line: bytes) -> bool:
    try:
        value = json.loads(line.decode("utf-8"))
        json.dumps(value, ensure_ascii=False).encode("utf-8")   # a lone surrogate escape is no text
        validate(kind, value)
    except RecordError:
        return False
    except (ValueError, RecursionError):   # undecodable, invalid JSON, over-long integers, deep nesting
        return False
    return True


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(kind=st.sampled_from(KINDS), draw=st.data())
def test_jsonl_bytes_give_rows_or_a_located_record_error(fuzz_dir, kind, draw):
    data = draw.draw(jsonl_files(kind))
    path = fuzz_dir / "rows.jsonl"
    path.write_bytes(data)
    numbered = [(n, line) for n, line in enumerate(_split_lines(data), start=1) if line.strip()]
    good = [n for n, line in numbered if _good(kind, line)]
    bad = [n for n, line in numbered if n not in good]

    skipped = SkipCounter()
    rows = list(read_records(str(path), kind, on_error="skip", skipped=skipped))
    assert [where for where, _ in rows] == [f"{path}:{n}" for n in good]
    assert skipped.total == len(bad) and all(isinstance(r, dict) for _, r in rows)
    for example, n in zip(skipped.examples, bad):
        assert example.startswith(f"{path}:{n}: ")

    if bad:
        with pytest.raises(RecordError) as err:
            list(read_records(str(path), kind))
        assert str(err.value).startswith(f"{path}:{bad[0]}: ")
    else:
        assert list(read_records(str(path), kind)) == rows


@FUZZ
@given(data=st.binary(max_size=200) | record_lines | st.sampled_from(ODD_LINES),
       kind=st.sampled_from(KINDS))
def test_json_and_txt_files_give_rows_or_a_record_error_naming_the_file(fuzz_dir, data, kind):
    for name in ("rows.json", "rows.txt"):
        path = fuzz_dir / name
        path.write_bytes(data)
        try:
            rows = list(read_records(str(path), kind, on_error="raise"))
        except RecordError as e:
            assert str(e).startswith(str(path)), e
        else:
            assert all(where.startswith(str(path)) and isinstance(r, dict) for where, r in rows)
        skipped = SkipCounter()
        list(read_records(str(path), kind, on_error="skip", skipped=skipped))


@pytest.mark.parametrize("line,message", [
    (b"{\"text\": " + b"1" * 5000 + b"}", "invalid JSON: Exceeds the limit (4300 digits)"),
    (b"[" * 5000, "invalid JSON: nested too deeply"),
])
def test_json_python_refuses_is_a_record_error(tmp_path, line, message):
    """These were ValueError/RecursionError escaping from json.loads with no file:line."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"{\"text\": \"ok\"}\r\n" + line + b"\r\n")
    with pytest.raises(RecordError, match=re.escape(f"{path}:2: {message}")):
        list(read_records(str(path), "cpt"))
    skipped = SkipCounter()
    assert len(list(read_records(str(path), "cpt", on_error="skip", skipped=skipped))) == 1
    assert skipped.total == 1
    whole = tmp_path / "x.json"
    whole.write_bytes(b"[" + line + b"]")
    with pytest.raises(RecordError, match=re.escape(f"{whole}: {message}")):
        list(read_records(str(whole), "cpt"))
