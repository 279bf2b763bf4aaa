"""Transparent huge pages for large host allocations (Linux, glibc >= 2.35).

XLA:CPU allocates an executable's temporaries as one buffer per run: 5.8 GB for a
SmolLM2-135M SFT step at batch 4 x 512. glibc maps anything that large afresh on every
malloc and unmaps it on free, so each step faulted those gigabytes in 4 KB at a time:
1.4M page faults and ~5 s of system CPU per ~16 s step on 2 cores. glibc's
`glibc.malloc.hugetlb=1` tunable asks the kernel for 2 MB pages on those mappings
(where transparent huge pages are in `madvise` mode, as here): ~3K faults per step, and
the step took 13.3-14.7 s instead of 15.3-17.6 s (bench/train_step.py shapes, A/B runs).
Keeping freed memory instead (one arena, no mmap, no trimming) gained as much but
fragmented the heap: a process running two peers' DPO steps ran out of 24 GB.

The tunable is read when the process starts, so entry points re-run themselves once with
it set (`reexec_with_huge_pages`, before any heavy import). `FINDAP_HOST_MALLOC=default`
opts out; so does setting GLIBC_TUNABLES yourself with any hugetlb value.
"""
from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, int]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()   # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else (0, 0)
    except (ValueError, OSError, AttributeError):   # not glibc (musl, macOS, Windows)
        return (0, 0)


def huge_pages_env(env: dict[str, str]) -> dict[str, str] | None:
    """The environment to re-run with, or None where nothing would change."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if (not sys.platform.startswith("linux") or env.get("FINDAP_HOST_MALLOC") == "default"
            or "glibc.malloc.hugetlb" in tunables or _glibc_version() < (2, 35)):
        return None
    try:
        with open(_THP) as f:
            if "[never]" in f.read():
                return None
    except OSError:
        return None
    return {**env, "GLIBC_TUNABLES": ":".join(t for t in (tunables, TUNABLE) if t)}


def reexec_with_huge_pages() -> None:
    """Replace this process by the same command with the tunable set (returns where the
    tunable is already set or does not apply). Call first thing in a `__main__` entry."""
    env = huge_pages_env(dict(os.environ))
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
