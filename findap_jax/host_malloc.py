"""Keep freed host memory for reuse instead of returning it to the OS (Linux/glibc).

XLA:CPU allocates an executable's temporaries as one buffer per run: 5.8 GB for a
SmolLM2-135M SFT step at batch 4 x 512. glibc serves anything over 32 MB with a fresh
mmap and unmaps it on free, so every step page-faulted and zeroed those gigabytes again:
1.4M page faults and ~5 s of system CPU per ~16 s step on 2 cores. With one malloc
arena, no mmap for large blocks and no trimming, the next step reuses the same pages.
The process keeps its peak footprint, which a training or eval job reaches anyway.

Call before JAX starts its CPU threads (the arena limit binds threads that have not
allocated yet); the CLI and the bench scripts do. `FINDAP_HOST_MALLOC=default` opts out.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc <malloc.h> mallopt parameters (stable ABI since glibc 2.10)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_done: list[bool] = []


def keep_freed_host_memory() -> bool:
    """Apply the settings once; True where they were applied (glibc on Linux)."""
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("FINDAP_HOST_MALLOC", "") != "default":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):   # not glibc (e.g. musl): leave malloc alone
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # -1 disables trimming; 0 disables mmap for large requests (mallopt(3))
            ok = all(mallopt(p, v) == 1 for p, v in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                                                       (_M_TRIM_THRESHOLD, -1)))
    _done.append(ok)
    return ok
