"""The host allocator: the entry re-runs itself once with glibc's huge-page tunable (or,
asked for, jemalloc preloaded), and large blocks then fault as intended: in 2 MB pages
under the tunable, not at all when reused under jemalloc."""
import os
import subprocess
import sys

import pytest

from findap_jax.cli import entry
from findap_jax.host_malloc import JEMALLOC_CONF, TUNABLE, find_jemalloc, host_malloc_env

# A fresh process (both are read at start-up): re-run as the entry points do, then malloc
# and touch 512 MB, free it, and do it again; print the page faults each round took.
_PROBE = """
import ctypes, os, resource
from findap_jax.host_malloc import reexec_with_host_malloc
reexec_with_host_malloc()
libc = ctypes.CDLL(None)   # the process-wide malloc: jemalloc when preloaded
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n, faults = 512 << 20, []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(p)
print(os.environ.get("LD_PRELOAD") or "-", os.environ.get("GLIBC_TUNABLES") or "-", *faults)
"""


_OURS = ("FINDAP_HOST_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF")


def _probe(**env) -> tuple[str, str, int, int]:
    base = {k: v for k, v in os.environ.items() if k not in _OURS}   # not this process's settings
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1], int(out[2]), int(out[3])


def test_env_respects_opt_outs_and_rejects_unknown_modes():
    assert host_malloc_env({"FINDAP_HOST_MALLOC": "default"}, jemalloc="/x/libjemalloc.so.2") is None
    assert host_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, jemalloc="/x/j.so") is None  # the user's
    assert host_malloc_env({"LD_PRELOAD": "/opt/libjemalloc.so.2"}, jemalloc="/x/j.so") is None
    with pytest.raises(ValueError, match="FINDAP_HOST_MALLOC='tcmalloc': choose one of hugetlb, jemalloc"):
        host_malloc_env({"FINDAP_HOST_MALLOC": "tcmalloc"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_env_preloads_jemalloc_first_and_keeps_the_users_settings():
    inherited = {"GLIBC_TUNABLES": TUNABLE, "FINDAP_HOST_MALLOC": "jemalloc"}   # a parent's default re-run
    assert host_malloc_env(inherited, jemalloc="/x/libjemalloc.so.2")["LD_PRELOAD"] == "/x/libjemalloc.so.2"
    got = host_malloc_env({"LD_PRELOAD": "/opt/libfoo.so", "FINDAP_HOST_MALLOC": "jemalloc"},
                          jemalloc="/x/libjemalloc.so.2")
    assert got["LD_PRELOAD"] == "/x/libjemalloc.so.2:/opt/libfoo.so"
    assert got["MALLOC_CONF"] == JEMALLOC_CONF
    assert host_malloc_env(got) is None                                  # no second re-run
    mine = host_malloc_env({"MALLOC_CONF": "narenas:2", "FINDAP_HOST_MALLOC": "jemalloc"},
                           jemalloc="/x/libjemalloc.so.2")
    assert mine["MALLOC_CONF"] == "narenas:2"


def test_asking_for_jemalloc_without_it_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr("findap_jax.host_malloc.find_jemalloc", lambda: None)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(RuntimeError, match="no libjemalloc.so.2 was found .apt install libjemalloc2"):
        host_malloc_env({"FINDAP_HOST_MALLOC": "jemalloc"})
    for key in ("GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FINDAP_HOST_MALLOC", "jemalloc")
    assert entry() == 2                                  # the command says so, no traceback
    assert "no libjemalloc.so.2 was found" in capsys.readouterr().err


_HUGE = host_malloc_env({}) is not None
_NEEDS_HUGE = "needs Linux, glibc >= 2.35 and transparent huge pages"
_JEMALLOC = sys.platform.startswith("linux") and find_jemalloc() is not None


@pytest.mark.skipif(not _HUGE, reason=_NEEDS_HUGE)
def test_default_adds_the_tunable_once_to_existing_tunables():
    got = host_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert got["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}" and "LD_PRELOAD" not in got
    assert host_malloc_env(got) is None


@pytest.mark.skipif(not _HUGE, reason=_NEEDS_HUGE)
def test_large_block_faults_in_huge_pages_under_the_tunable():
    _, tunables, faults, _ = _probe()
    assert TUNABLE in tunables
    assert faults < 2048           # 512 MB in 2 MB pages: ~256 faults (+ the interpreter's own)
    _, tunables, faults, again = _probe(FINDAP_HOST_MALLOC="default")
    assert TUNABLE not in tunables
    assert faults > 100_000 and again > 100_000   # 4 KB pages, unmapped on free: 131,072 each time


@pytest.mark.skipif(not _JEMALLOC, reason="needs jemalloc on the system (apt install libjemalloc2)")
def test_jemalloc_keeps_a_freed_block_mapped_for_the_next_one():
    preload, _, first, again = _probe(FINDAP_HOST_MALLOC="jemalloc")
    assert "jemalloc" in preload and os.path.isabs(preload.split(":")[0])
    assert first > 10_000          # the first touch faults the block in
    assert again < 1_000           # the same pages come back: what XLA's next step gets
    _, _, _, again = _probe(FINDAP_HOST_MALLOC="jemalloc", MALLOC_CONF="dirty_decay_ms:0,muzzy_decay_ms:0")
    assert again > 100_000         # purging on (the user's MALLOC_CONF, kept): faulted afresh
