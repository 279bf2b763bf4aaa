"""The bench scripts' machine-readable results: one JSON line per script run.

Each script given `--json FILE` appends a record {"script", "args", "cpu", "time", "figures"}
to FILE, so that one `make bench` run leaves every figure it printed in one file, and
`bench/targets.py` can set them against the performance targets without anyone copying
numbers by hand.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from findap_jax.files import jsonl_lines
from timing import cpu_summary  # bench/timing.py


def append_record(path: str | None, script: str, args, figures: dict) -> None:
    """Append one script run's figures to the JSON-lines file `path` (nothing if None).
    `args` is the script's argparse namespace (or a dict): a record says what was run."""
    if not path:
        return
    record = {"script": script, "args": dict(vars(args) if not isinstance(args, dict) else args),
              "cpu": cpu_summary(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "figures": figures}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def load_records(path: str) -> list[dict]:
    """Every record in `path`, in the order written. A line that is not a record is an
    error naming the file and line: a table built from half a results file would mislead."""
    records = []
    for i, rec in jsonl_lines(path):
        missing = [k for k in ("script", "args", "figures") if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise ValueError(f"{path}:{i}: a bench record needs {', '.join(missing)}")
        records.append(rec)
    return records
