"""Huge pages for large host allocations: the entry re-runs itself once with glibc's
tunable set, and a large block then faults in 2 MB pages, not 4 KB ones."""
import os
import subprocess
import sys

import pytest

from findap_jax.host_malloc import TUNABLE, huge_pages_env

# A fresh process (glibc reads the tunable at start-up): re-run with huge pages, then
# malloc and touch 512 MB and print the page faults that took.
_PROBE = """
import ctypes, os, resource
from findap_jax.host_malloc import reexec_with_huge_pages
reexec_with_huge_pages()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
n = 512 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc(n), 1, n)
print(os.environ.get("GLIBC_TUNABLES", "-"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(**env) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_env_respects_opt_outs():
    assert huge_pages_env({"FINDAP_HOST_MALLOC": "default"}) is None
    assert huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None   # the user's own choice


_QUALIFIES = huge_pages_env({}) is not None
_NEEDS = "needs Linux, glibc >= 2.35 and transparent huge pages"


@pytest.mark.skipif(not _QUALIFIES, reason=_NEEDS)
def test_env_adds_the_tunable_once_to_existing_tunables():
    got = huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert got["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}"
    assert huge_pages_env(got) is None                     # no second re-run


@pytest.mark.skipif(not _QUALIFIES, reason=_NEEDS)
def test_large_block_faults_in_huge_pages_after_the_rerun():
    tunables, faults = _probe()
    assert TUNABLE in tunables
    assert faults < 2048           # 512 MB in 2 MB pages: ~256 faults (+ the interpreter's own)
    tunables, faults = _probe(FINDAP_HOST_MALLOC="default")
    assert TUNABLE not in tunables
    assert faults > 100_000        # 4 KB pages: 131,072 faults for 512 MB
