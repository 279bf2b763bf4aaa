"""JAX's persistent compilation cache, pointed at a directory by config (`run.compilation_cache`).

A training step compiles once per input shape, and prompt-shared preference rows have
several shapes per epoch (row lengths x row counts, ~21 on the bundled HH-RLHF pairs), each
a compile of tens of seconds for SmolLM2 on a CPU. With the cache, a restarted or repeated
run loads those executables from disk instead of compiling them again. JAX writes entries
from process 0 only, so several hosts need a directory they all see. The directory is
trusted code: do not share it with users you do not trust (JAX's own warning).
"""
from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache


def use_compilation_cache(path: str) -> bool:
    """Point JAX's persistent compilation cache at `path` ("" leaves JAX's own setting, e.g.
    JAX_COMPILATION_CACHE_DIR, alone). Returns whether the directory changed. JAX decides
    once per process whether the cache is in use, so a change resets that decision."""
    if not path:
        return False
    path = os.path.abspath(os.path.expanduser(path))
    if jax.config.jax_compilation_cache_dir == path:
        return False
    os.makedirs(path, exist_ok=True)
    compilation_cache.set_cache_dir(path)
    compilation_cache.reset_cache()
    return True
