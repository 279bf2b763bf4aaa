"""Result and state files written so a crash never leaves half a file, and read so a
damaged one is an error naming the file and line: the one place for that I/O (eval
outputs, recipe markers, trainer metrics, reference log-prob tables, distill outputs,
resume logs, bench records)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path


def _write_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write through a temporary file and rename: a crash never leaves a half-written file."""
    return _write_atomic(path, text.encode("utf-8"))


def _read_text(path: str | Path) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: undecodable bytes (not UTF-8) at byte {e.start}") from None


def read_json(path: str | Path):
    """A JSON file; a damaged one is a `file:line` error."""
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def jsonl_lines(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number, value) per non-blank line of a JSON-lines file; a damaged line is a
    `file:line` error. Lines end at "\\n" (or CRLF) and nowhere else: `str.splitlines` also
    cuts at U+2028, U+2029 and U+0085, which `json.dumps(ensure_ascii=False)` leaves raw
    inside strings, so a generated answer holding one would read back as two broken lines."""
    for i, line in enumerate(_read_text(path).split("\n"), 1):
        if line.strip():
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: invalid JSON: {e.msg}") from None


def read_jsonl(path: str | Path) -> list:
    """One JSON value per non-blank line (`jsonl_lines`)."""
    return [value for _, value in jsonl_lines(path)]


def end_jsonl_cleanly(path: str | Path) -> bool:
    """Ready a JSON-lines file that a killed run was appending to for the next append. A last
    line without its newline is that run's torn write: it is dropped when it is not whole
    JSON (possibly cut inside a UTF-8 character), and given its newline when it is, so the
    next record starts a line of its own instead of gluing onto it. Returns whether a line
    was dropped. Rewritten atomically; every complete line is kept as it was."""
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    if not data or data.endswith(b"\n"):
        return False
    head, newline, last = data.rpartition(b"\n")
    try:
        json.loads(last.decode("utf-8"))
    except ValueError:   # UnicodeDecodeError and JSONDecodeError both are
        _write_atomic(path, head + newline)
        return True
    _write_atomic(path, data + b"\n")
    return False
