"""Result/state files: damaged JSON is a `file:line` error; an atomic write leaves either
the old file or the new one, never a torn one, and no temporary file behind; JSON lines
split at newlines only; a killed append's torn last line is cut before the next append."""
import json
import os

import pytest

from findap_jax.data.tokenizer import Tokenizer
from findap_jax.files import end_jsonl_cleanly, jsonl_lines, read_json, read_jsonl, write_text_atomic
from tests.helpers import save_tiny_tokenizer


def test_damaged_json_and_jsonl_are_located(tmp_path):
    bad = tmp_path / "x.done"
    bad.write_text('{\n "seconds": 1,\n "stats": {')
    with pytest.raises(ValueError, match=r"x\.done:3: invalid JSON"):
        read_json(bad)
    lines = tmp_path / "metrics.jsonl"
    lines.write_text('{"step": 1}\n\n{"step": 2}\n{"step": \n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:4: invalid JSON"):
        read_jsonl(lines)
    lines.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert read_jsonl(lines) == [{"step": 1}, {"step": 2}]


def test_atomic_write_replaces_whole_file_or_keeps_the_old(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "sub" / "results.json", '{"a": 1}')
    assert read_json(path) == {"a": 1}

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, '{"a": 2}')
    assert read_json(path) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    monkeypatch.undo()
    write_text_atomic(path, '{"a": 3}')
    assert read_json(path) == {"a": 3}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_damaged_tokenizer_config_is_located(tmp_path):
    d = save_tiny_tokenizer(tmp_path / "tok")
    (d / "tokenizer_config.json").write_text('{\n "eos_token": \n')
    with pytest.raises(ValueError, match=r"tokenizer_config\.json:3: invalid JSON"):
        Tokenizer.from_dir(d)


def test_jsonl_lines_split_at_newlines_only(tmp_path):
    path = tmp_path / "answers.jsonl"
    texts = ["a\u2028b", "c\u2029d", "e\x85f"]   # json.dumps(ensure_ascii=False) leaves these raw
    path.write_bytes("".join(json.dumps({"text": t}, ensure_ascii=False) + "\r\n" for t in texts).encode())
    assert [r["text"] for r in read_jsonl(path)] == texts
    assert [i for i, _ in jsonl_lines(path)] == [1, 2, 3]
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(ValueError, match=r"answers\.jsonl:2: undecodable bytes \(not UTF-8\) at byte 16"):
        read_jsonl(path)


@pytest.mark.parametrize("before, after, dropped", [
    (b'{"a": 1}\n{"a": 2', b'{"a": 1}\n', True),                    # killed inside a record
    (b'{"a": 1}\n' + '{"a": "\u00e9'.encode()[:-1], b'{"a": 1}\n', True),   # ... inside a UTF-8 character
    (b'{"a": 1}\n{"a": 2}', b'{"a": 1}\n{"a": 2}\n', False),        # whole, only its newline missing
    (b'{"a": 1}\n', b'{"a": 1}\n', False),
    (b'{"a', b"", True),
])
def test_end_jsonl_cleanly_cuts_a_torn_last_line_only(tmp_path, before, after, dropped):
    path = tmp_path / "progress.jsonl"
    path.write_bytes(before)
    assert end_jsonl_cleanly(path) is dropped
    assert path.read_bytes() == after
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"b": 2}\n')
    assert read_jsonl(path)[-1] == {"b": 2}
    assert end_jsonl_cleanly(tmp_path / "missing.jsonl") is False
    assert not (tmp_path / "missing.jsonl").exists()
