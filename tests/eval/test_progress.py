"""A killed generation eval resumes from its progress file: the rerun regenerates only the
missing rows, its outputs equal an uninterrupted run, and stale or damaged progress is
never silently reused."""
import json
import os

import pytest

from findap_jax.cli import main
from findap_jax.eval.progress import GenerationProgress, model_fingerprint
from findap_jax.generation import sampler

CONFIG = "configs/eval/fineval.py"


def _eval(model_dir, out, *extra):
    return main(["eval", f"--config={CONFIG}", f"--config.model={model_dir}", f"--config.output_dir={out}",
                 "--config.tasks=finqa_mini", "--config.limit=6", "--config.max_new_tokens=5",
                 "--config.batch_size=2", *extra])


def _preds(out):
    return [json.loads(x) for x in (out / "predictions" / "finqa_mini.jsonl").read_text().splitlines()]


def test_killed_generation_resumes_and_matches_an_uninterrupted_run(tiny_chat_model, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    assert _eval(tiny_chat_model, whole) == 0
    assert not (whole / "predictions" / ".progress" / "finqa_mini.jsonl").exists()   # removed when written

    real = sampler.generate_ids
    calls = []

    def dies_on_third_batch(*args, **kw):
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    monkeypatch.setattr(sampler, "generate_ids", dies_on_third_batch)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _eval(tiny_chat_model, killed)
    progress = killed / "predictions" / ".progress" / "finqa_mini.jsonl"
    assert len(progress.read_text().splitlines()) == 4 and not (killed / "results.json").exists()

    calls.clear()
    progress.write_text(progress.read_text() + '{"key": "torn')   # a write cut short by the kill
    assert _eval(tiny_chat_model, killed) == 0
    assert calls == [2]                      # only the 2 rows never finished were generated
    assert _preds(killed) == _preds(whole)
    res = json.loads((killed / "results.json").read_text())["finqa_mini"]
    assert res["resumed"] == 4 and res["n"] == 6
    assert not progress.exists()


def test_changed_budget_regenerates_every_row(tiny_chat_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    progress = GenerationProgress(out / "predictions" / ".progress" / "finqa_mini.jsonl", "fp")
    progress.append(["not-a-key-of-these-rows"], ["stale answer"])
    assert _eval(tiny_chat_model, out) == 0
    res = json.loads((out / "results.json").read_text())["finqa_mini"]
    assert res["resumed"] == 0 and all(p["prediction"] != "stale answer" for p in _preds(out))


def test_damaged_progress_line_is_located(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"key": "a", "text": "x"}\nnot json\n{"key": "b", "text": "y"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: invalid JSON.*; delete the file"):
        GenerationProgress(path, "fp")
    path.write_text('{"key": "a", "text": "x"}\n{"key": "b", "te')
    p = GenerationProgress(path, "fp")
    assert p.done == {"a": "x"}
    p.append(["c"], ["z"])                     # the torn tail was cut, so new lines stay whole
    assert GenerationProgress(path, "fp").done == {"a": "x", "c": "z"}
    path.write_text('{"key": "a", "text": "x"}\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: bad progress record .*'text'.*; delete the file"):
        GenerationProgress(path, "fp")


def test_answers_holding_line_separators_resume(tmp_path):
    """Generated text may hold U+2028, U+2029 or U+0085, which the progress lines keep raw."""
    path = tmp_path / "p.jsonl"
    answers = {"a": "x\u2028y", "b": "Z\u00fcrich\x85", "c": "end\u2029"}
    GenerationProgress(path, "fp").append(list(answers), list(answers.values()))
    with open(path, "ab") as f:                # killed inside a UTF-8 character of the next line
        f.write('{"key": "d", "text": "\u00e9'.encode()[:-1])
    p = GenerationProgress(path, "fp")
    assert p.done == answers
    p.append(["d"], ["\u00e9"])
    assert GenerationProgress(path, "fp").done == answers | {"d": "\u00e9"}


def test_fingerprint_changes_when_a_weights_file_is_overwritten_in_place(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    w = d / "model.safetensors"
    w.write_bytes(b"a" * 10)
    os.utime(w, ns=(1, 1_000_000_000))
    before, dir_mtime = model_fingerprint(str(d), "float32"), d.stat().st_mtime_ns
    with open(w, "r+b") as f:                  # in place: the directory's own mtime stays
        f.write(b"b" * 10)
    assert d.stat().st_mtime_ns == dir_mtime
    assert model_fingerprint(str(d), "float32") != before
    assert model_fingerprint(str(d), "bfloat16") != model_fingerprint(str(d), "float32")
    now = model_fingerprint(str(d), "float32")   # an eval output dir inside the model dir is no model file
    from findap_jax.eval.progress import progress_path
    GenerationProgress(progress_path(d / "eval", "fpb"), now).append(["k"], ["t"])
    (d / "eval" / "results.json").write_text("{}")
    assert model_fingerprint(str(d), "float32") == now
