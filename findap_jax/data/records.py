"""Read FinTrain-style record files (jsonl, json, parquet, txt; glob patterns) and check
their schemas. Every error names the file, the line (or record index) and the field.

Schemas:
  cpt         {"text": str}
  chat        {"messages": [{"role", "content"}, ...]} or {"prompt": str, "response": str}
  preference  {"prompt": str | "messages": [...], "chosen": str, "rejected": str}
  cfa         {"question", "answer_choices", "answer", optional "scenario", "exhibit", "id", "reference"}
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from collections.abc import Iterator, Sequence

from findap_jax.data.chat import check_messages


class RecordError(ValueError):
    """A bad record: the message starts with `file:line`."""


@dataclasses.dataclass
class SkipCounter:
    """What was skipped (policy 'skip') and why, by reason."""
    counts: dict = dataclasses.field(default_factory=dict)
    examples: list = dataclasses.field(default_factory=list)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{where}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def expand(patterns: str | Sequence[str]) -> list[str]:
    """Sorted files matching glob pattern(s), each file once; a pattern matching no file is
    an error.
    `tfds:NAME[:VERSION][@DATA_DIR]` entries name a prepared TFDS dataset and pass through."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files: list[str] = []
    for p in patterns:
        if p.startswith("tfds:"):
            files.append(p)
            continue
        path = os.path.expanduser(p)
        if os.path.isfile(path):   # a name, even one with glob characters ("train[1].jsonl")
            hits = [path]
        else:
            hits = [h for h in sorted(glob.glob(path, recursive=True)) if os.path.isfile(h)]
        if not hits:
            raise FileNotFoundError(f"{p}: no files match" + (" (only directories)" if glob.glob(path) else ""))
        files += [h for h in hits if h not in files]   # overlapping patterns read a file once
    return files


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) with LF, CRLF or lone-CR line ends."""
    with open(path, "rb") as f:
        data = f.read()
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for i, line in enumerate(data.split(b"\n"), start=1):
        yield i, line


def _from_numpy(v):
    """TFDS numpy values -> JSON-like: bytes -> str, arrays -> lists, a dict of equal-length
    sequences (a TFDS Sequence of dicts, e.g. chat messages) -> a list of dicts."""
    import numpy as np
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        return [_from_numpy(x) for x in v] if v.ndim else _from_numpy(v.item())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        out = {k: _from_numpy(x) for k, x in v.items()}
        lens = {len(x) for x in out.values() if isinstance(x, list)}
        if out and len(lens) == 1 and all(isinstance(x, list) for x in out.values()):
            n = lens.pop()
            return [{k: out[k][i] for k in out} for i in range(n)]
        return out
    return v


def read_tfds(spec: str, split: str) -> Iterator[tuple[str, dict | None, str | None]]:
    """Records of a prepared TFDS dataset: `tfds:NAME[:VERSION][@DATA_DIR]` (never downloads)."""
    import tensorflow_datasets as tfds
    body = spec[len("tfds:"):]
    body, _, data_dir = body.partition("@")
    name, _, version = body.partition(":")
    try:
        builder = tfds.builder(name, data_dir=data_dir or None, version=version or None)
        ds = builder.as_dataset(split=split)
    except Exception as e:  # noqa: BLE001 - tfds raises many types for missing data
        yield spec, None, f"cannot read TFDS dataset {name!r} split {split!r}: {e}"
        return
    for i, ex in enumerate(tfds.as_numpy(ds)):
        where, rec = f"{spec}[{split}][{i}]", {}
        for k, v in ex.items():
            try:
                rec[k] = _from_numpy(v)
            except UnicodeDecodeError as e:
                yield where, None, f"field '{k}': undecodable bytes (not UTF-8) at byte {e.start}"
                break
        else:
            yield where, rec, None


def _json_limit(e: Exception) -> str:
    """Valid-looking JSON that Python refuses: an integer of over 4300 digits (ValueError)
    or nesting deeper than the recursion limit."""
    if isinstance(e, RecursionError):
        return "invalid JSON: nested too deeply"
    return f"invalid JSON: {str(e).split(':')[0].split(';')[0]}"


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(rec, where: str = "") -> str | None:
    """The path of the first string in `rec` holding a lone UTF-16 surrogate (JSON lets a
    "\\ud800" escape through; no tokenizer takes it), else None."""
    if isinstance(rec, str):
        try:
            rec.encode("utf-8")
        except UnicodeEncodeError:
            return where or "(record)"
        return None
    items = rec.items() if isinstance(rec, dict) else enumerate(rec) if isinstance(rec, list) else ()
    for k, v in items:
        found = _lone_surrogate(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else k)
        if found:
            return found
    return None


def _surrogate_error(rec) -> str | None:
    field = _lone_surrogate(rec)
    return None if field is None else f"field '{field}': a lone surrogate escape (\\ud800-\\udfff), not valid Unicode"


def read_raw(path: str, text_field: str = "text", split: str = "train") -> Iterator[tuple[str, dict | None, str | None]]:
    """Yield (location, record or None, error or None) for every record of one file.
    Blank lines are passed over. `.txt` files give one {"text": ...} per file."""
    if path.startswith("tfds:"):
        yield from read_tfds(path, split)
        return
    ext = path.rsplit(".", 1)[-1].lower()
    if ext == "json":
        try:
            text = open(path, "rb").read().decode("utf-8")
            data = json.loads(text)
        except UnicodeDecodeError as e:
            yield f"{path}", None, f"undecodable bytes (not UTF-8) at byte {e.start}"
            return
        except json.JSONDecodeError as e:
            yield f"{path}:{e.lineno}", None, f"invalid JSON: {e.msg}"
            return
        except (ValueError, RecursionError) as e:
            yield f"{path}", None, _json_limit(e)
            return
        if not isinstance(data, list):
            yield f"{path}", None, "a .json file must hold a list of records"
            return
        check = _SURROGATE_ESCAPE.search(text.encode("utf-8")) is not None
        for i, rec in enumerate(data):
            err = _surrogate_error(rec) if check else None
            yield f"{path}[{i}]", None if err else rec, err
    elif ext == "jsonl":
        for n, raw in _lines(path):
            if not raw.strip():
                continue
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, None, f"undecodable bytes (not UTF-8) at column {e.start + 1}"
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, None, f"invalid JSON at column {e.colno}: {e.msg}"
                continue
            except (ValueError, RecursionError) as e:
                yield where, None, _json_limit(e)
                continue
            err = _surrogate_error(rec) if _SURROGATE_ESCAPE.search(raw) else None
            yield where, None if err else rec, err
    elif ext == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as e:
            yield path, None, f"unreadable parquet file: {e}"
            return
        for i, rec in enumerate(rows):
            yield f"{path}[{i}]", rec, None
    elif ext == "txt":
        try:
            text = open(path, "rb").read().decode("utf-8")
        except UnicodeDecodeError as e:
            yield path, None, f"undecodable bytes (not UTF-8) at byte {e.start}"
            return
        text = text.removeprefix("\ufeff")   # a byte-order mark is no text
        yield path, {text_field: text.replace("\r\n", "\n").replace("\r", "\n")}, None
    else:
        yield path, None, f"unsupported file type .{ext} (use .jsonl, .json, .parquet or .txt)"


def str_field(rec: dict, key: str, allow_empty: bool = False) -> str:
    if key not in rec:
        raise RecordError(f"field '{key}': missing")
    v = rec[key]
    if not isinstance(v, str):
        raise RecordError(f"field '{key}': expected a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise RecordError(f"field '{key}': empty")
    return v


def validate(kind: str, rec) -> dict:
    """Normalise one record of `kind`; raises RecordError('field ...: ...')."""
    if not isinstance(rec, dict):
        raise RecordError(f"expected a JSON object, got {type(rec).__name__}")
    if kind == "cpt":
        return {"text": str_field(rec, "text")}
    if kind == "chat":
        if "messages" in rec:
            msgs = rec["messages"]
            try:
                check_messages(msgs, "field 'messages'")
            except ValueError as e:
                raise RecordError(str(e)) from None
            if not any(m["role"] == "assistant" for m in msgs):
                raise RecordError("field 'messages': no assistant turn to learn from")
            return {"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
        if "prompt" in rec or "response" in rec:
            return {"messages": [{"role": "user", "content": str_field(rec, "prompt")},
                                 {"role": "assistant", "content": str_field(rec, "response")}]}
        raise RecordError("field 'messages': missing (or give 'prompt' and 'response')")
    if kind == "preference":
        if "messages" in rec:
            try:
                check_messages(rec["messages"], "field 'messages'")
            except ValueError as e:
                raise RecordError(str(e)) from None
            prompt = [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
        else:
            prompt = [{"role": "user", "content": str_field(rec, "prompt")}]
        if prompt[-1]["role"] == "assistant":
            raise RecordError("field 'messages': the prompt must end with a user turn")
        return {"messages": prompt, "chosen": str_field(rec, "chosen"),
                "rejected": str_field(rec, "rejected")}
    if kind == "cfa":
        choices = rec.get("answer_choices")
        if not isinstance(choices, (list, dict)) or not choices:
            raise RecordError("field 'answer_choices': expected a non-empty list or object")
        out = {"question": str_field(rec, "question"), "answer": str_field(rec, "answer"),
               "answer_choices": choices}
        for opt in ("scenario", "exhibit", "id", "reference"):
            if rec.get(opt) is not None:
                out[opt] = str(rec[opt])
        return out
    raise ValueError(f"unknown record kind {kind!r} (cpt, chat, preference, cfa)")


def read_records(patterns: str | Sequence[str], kind: str, on_error: str = "raise",
                 skipped: SkipCounter | None = None, split: str = "train") -> Iterator[tuple[str, dict]]:
    """Yield (location, normalised record). on_error='raise' stops at the first bad record
    with `file:line: field ...`; 'skip' counts it in `skipped` and goes on."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    for path in expand(patterns):
        for where, rec, err in read_raw(path, split=split):
            if err is None:
                try:
                    yield where, validate(kind, rec)
                    continue
                except RecordError as e:
                    err = str(e)
            if on_error == "raise":
                raise RecordError(f"{where}: {err}")
            if skipped is not None:
                skipped.add(err.split(":")[0] if err.startswith("field") else err, where)
