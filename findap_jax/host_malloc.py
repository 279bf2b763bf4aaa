"""The host allocator for XLA:CPU's per-run temporaries (Linux).

XLA:CPU allocates an executable's temporaries as one buffer per run: 3.8 GB for a
SmolLM2-135M SFT step at batch 4 x 512. glibc maps anything that large afresh on every
malloc and unmaps it on free, so every step faults those gigabytes in again. Entry points
pick a remedy when they start (`reexec_with_host_malloc` re-runs the process once with the
environment set, since both are read at process start):

- `hugetlb`, the default: glibc's `glibc.malloc.hugetlb=1` tunable (glibc >= 2.35,
  transparent huge pages in `madvise` or `always` mode) faults the mappings in 2 MB pages:
  ~3K faults per step instead of 1.4M (session 10: step 15.3-17.6 -> 13.3-14.7 s). Memory
  still goes back on free: 1-1.3 s of system CPU per step remain, and on a VM with
  free-page reporting a step that follows seconds of other work re-faults it from the host
  (9-12 s of system CPU measured here after a torch step).
- `jemalloc`, opt-in, where the system has it (Debian/Ubuntu `apt install libjemalloc2`,
  conda `jemalloc`): preloaded with purging off, it keeps freed memory mapped and hands the
  same pages to the next step, so steps after the first fault nothing (0.05-0.1 s of system
  CPU per step). Not the default: the process keeps every arena's peak, and one of two
  runs peaked at 9.9 GB of resident memory where glibc peaked at 6.0 (see README Results).
Keeping freed memory with glibc instead (one arena, no mmap, no trimming) gained as much as
huge pages but fragmented the heap: a process running two peers' DPO steps ran out of 24 GB.

`FINDAP_HOST_MALLOC`: `hugetlb` (or unset), `jemalloc` (an error if it is not found), or
`default` (leave the process as it is). Setting LD_PRELOAD to a jemalloc or GLIBC_TUNABLES
with a hugetlb value yourself also leaves it as it is; MALLOC_CONF, if set, is yours and kept.
Child processes inherit the environment, and with it the allocator.
"""
from __future__ import annotations

import ctypes.util
import os
import sys
import sysconfig

TUNABLE = "glibc.malloc.hugetlb=1"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"   # never purge: freed pages stay mapped
MODES = ("hugetlb", "jemalloc", "default")
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, int]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()   # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else (0, 0)
    except (ValueError, OSError, AttributeError):   # not glibc (musl, macOS, Windows)
        return (0, 0)


def find_jemalloc() -> str | None:
    """The path of jemalloc's shared library: in this Python's prefix (conda, venvs over
    it), else the file behind the name `ctypes.util.find_library` gives, looked up in the
    loader's standard folders. A path, since LD_PRELOAD of a name the loader cannot find is
    only a warning, and the process would run on glibc unnoticed. (Loading it here to ask
    the loader fails: jemalloc needs static TLS that a running process has used up.)"""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        path = os.path.join(prefix, "lib", "libjemalloc.so.2")
        if os.path.exists(path):
            return path
    name = ctypes.util.find_library("jemalloc")
    if not name:
        return None
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for folder in (f"/usr/lib/{arch}", f"/lib/{arch}", "/usr/local/lib", "/usr/lib64", "/lib64", "/usr/lib", "/lib"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _huge_pages_apply() -> bool:
    if _glibc_version() < (2, 35):
        return False
    try:
        with open(_THP) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def host_malloc_env(env: dict[str, str], jemalloc: str | None = None) -> dict[str, str] | None:
    """The environment to re-run with, or None where nothing would change. `jemalloc`: the
    library to preload (default: `find_jemalloc()`)."""
    mode = env.get("FINDAP_HOST_MALLOC") or "hugetlb"
    if mode not in MODES:
        raise ValueError(f"FINDAP_HOST_MALLOC={mode!r}: choose one of {', '.join(MODES)}")
    tunables, preload = env.get("GLIBC_TUNABLES", ""), env.get("LD_PRELOAD", "")
    if mode == "default" or not sys.platform.startswith("linux") or "jemalloc" in preload:
        return None
    if mode == "jemalloc":   # even under a parent's hugetlb tunable: it does not touch jemalloc
        jemalloc = jemalloc or find_jemalloc()
        if not jemalloc:
            raise RuntimeError("FINDAP_HOST_MALLOC=jemalloc, but no libjemalloc.so.2 was found "
                               "(apt install libjemalloc2, or conda install jemalloc)")
        return {**env, "LD_PRELOAD": ":".join(p for p in (jemalloc, preload) if p),
                "MALLOC_CONF": env.get("MALLOC_CONF") or JEMALLOC_CONF}
    if "glibc.malloc.hugetlb" in tunables or not _huge_pages_apply():
        return None
    return {**env, "GLIBC_TUNABLES": ":".join(t for t in (tunables, TUNABLE) if t)}


def reexec_with_host_malloc() -> None:
    """Replace this process by the same command with the allocator environment set
    (returns where it is already set or nothing applies). Call first thing in a `__main__`
    entry, before any heavy import."""
    env = host_malloc_env(dict(os.environ))
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
