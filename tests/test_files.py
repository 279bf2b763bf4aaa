"""Result/state files: damaged JSON is a `file:line` error; an atomic write leaves either
the old file or the new one, never a torn one, and no temporary file behind."""
import os

import pytest

from findap_jax.data.tokenizer import Tokenizer
from findap_jax.files import read_json, read_jsonl, write_text_atomic
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
