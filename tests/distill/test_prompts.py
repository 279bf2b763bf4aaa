"""CFA-style exercises: choices in letter order, ids that survive edits and renames, and a
policy prompt that names the exercise's own letters."""
import json

import pytest

from findap_jax.data.records import RecordError
from findap_jax.distill.prompts import load_exercises, policy_prompt


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_choices_are_put_in_letter_order_and_must_be_letters(tmp_path):
    (ex,) = load_exercises(_write(tmp_path / "a.jsonl", [
        {"id": "x", "question": "Q?", "answer_choices": {"C": "3", "A": "1", "B": "2"}, "answer": "A"}]))
    assert list(ex["choices"]) == ["A", "B", "C"]   # extract_choice's index 0 is A whatever the file's order
    with pytest.raises(RecordError, match=r"a\.jsonl:1: field 'answer_choices': keys \['A', 'C'\] must be"):
        load_exercises(_write(tmp_path / "a.jsonl", [
            {"question": "Q?", "answer_choices": {"A": "1", "C": "3"}, "answer": "A"}]))


def test_ids_without_an_id_field_come_from_the_content(tmp_path, monkeypatch):
    rows = [{"question": f"Q{i}?", "answer_choices": ["1", "2", "3"], "answer": "A"} for i in range(2)]
    ids = [e["id"] for e in load_exercises(_write(tmp_path / "ex.jsonl", rows))]
    monkeypatch.chdir(tmp_path)
    moved = [e["id"] for e in load_exercises(_write(tmp_path / "ex.jsonl", [{"question": "New?", "answer_choices":
                                                                                ["1", "2"], "answer": "B"}] + rows))]
    assert moved[1:] == ids and len(set(moved)) == 3          # a line inserted above changes none of them
    assert [e["id"] for e in load_exercises("./ex.jsonl")] == moved   # nor does the path's spelling
    twice = [e["id"] for e in load_exercises(_write(tmp_path / "ex.jsonl", [rows[0], rows[1], rows[0]]))]
    assert twice == [ids[0], ids[1], ids[0] + "#2"]            # a repeated exercise is its own
    with pytest.raises(RecordError, match=r"ex\.jsonl:2: field 'id': 'x' repeats"):
        load_exercises(_write(tmp_path / "ex.jsonl", [{**rows[0], "id": "x"}, {**rows[1], "id": "x"}]))


def test_policy_prompt_names_the_exercise_letters(tmp_path):
    (ex,) = load_exercises(_write(tmp_path / "d.jsonl", [
        {"id": "d", "question": "Q?", "answer_choices": ["1", "2", "3", "4"], "answer": "D"}]))
    assert policy_prompt(ex).endswith('"Selection: [[X]]" where X is A, B, C or D.')
    (three,) = load_exercises(None)[:1]
    assert policy_prompt(three).endswith("where X is A, B or C.")
