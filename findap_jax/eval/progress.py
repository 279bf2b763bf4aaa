"""Progress of a generation task, so a killed or preempted `findap-jax eval` resumes where it
stopped instead of regenerating hours of answers.

Every finished generation batch appends one line per row to
`output_dir/predictions/.progress/<task>.jsonl`: {"key", "text"}. The key hashes what the
answer depends on (the model's fingerprint, the prompt's token ids, the token budget and the
stop strings), so a changed prompt, model or budget regenerates that row rather than
reusing a stale answer. The file is removed once the task's outputs are written.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from findap_jax.files import end_jsonl_cleanly, jsonl_lines


def result_file_name(key: str) -> str:
    """File stem of a result key ("cfa_mini:loglik" -> "cfa_mini@loglik")."""
    return key.replace(":", "@")


def progress_path(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / "predictions" / ".progress" / f"{result_file_name(key)}.jsonl"


_EVAL_OUTPUTS = ("results.json", "report.md", "compare.png")


def model_fingerprint(path: str, dtype: str) -> str:
    """Path, dtype, and the size and modification time of every model file (a model retrained
    or copied over the same path, even in place, gets a new fingerprint; a directory's own
    mtime does not change when a file in it is overwritten)."""
    p = Path(path)
    if not p.exists():
        return f"{path}|{dtype}|0"
    # an eval output dir placed inside the model dir changes as the run goes: not model files
    files = sorted(f for f in p.rglob("*") if f.is_file() and "predictions" not in f.relative_to(p).parts
                   and f.name not in _EVAL_OUTPUTS) if p.is_dir() else [p]
    stamp = hashlib.sha256("".join(f"{f.relative_to(p) if p.is_dir() else f.name}:{f.stat().st_size}:"
                                   f"{f.stat().st_mtime_ns}\n" for f in files).encode()).hexdigest()[:16]
    return f"{p.resolve()}|{dtype}|{stamp}"


def row_key(fingerprint: str, prompt_ids: Sequence[int], max_new_tokens: int, stop: Sequence[str]) -> str:
    blob = json.dumps([fingerprint, list(map(int, prompt_ids)), int(max_new_tokens), list(stop)])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class GenerationProgress:
    """Answers already generated for one task (read at start), appended to per batch."""

    def __init__(self, path: str | Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.done: dict[str, str] = {}
        if self.path.exists():
            end_jsonl_cleanly(self.path)   # the torn tail of a killed write: dropped
            try:
                for i, rec in jsonl_lines(self.path):
                    if not (isinstance(rec, dict) and isinstance(rec.get("key"), str)
                            and isinstance(rec.get("text"), str)):
                        raise ValueError(f"{self.path}:{i}: bad progress record (needs a string "
                                         "'key' and 'text')")
                    self.done[rec["key"]] = rec["text"]
            except ValueError as e:
                raise ValueError(f"{e}; delete the file to regenerate the task") from None

    def key(self, prompt_ids, max_new_tokens: int, stop) -> str:
        return row_key(self.fingerprint, prompt_ids, max_new_tokens, stop)

    def append(self, keys: Sequence[str], texts: Sequence[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for k, t in zip(keys, texts):
                f.write(json.dumps({"key": k, "text": t}, ensure_ascii=False) + "\n")
                self.done[k] = t
            f.flush()
            os.fsync(f.fileno())
