"""keep_freed_host_memory: a freed large block is reused without new page faults."""
import os
import subprocess
import sys

import pytest

# In a fresh process (the settings are process-wide): allocate and touch 512 MB, free it,
# allocate and touch again; print the page faults of the second touch.
_PROBE = """
import ctypes, resource, sys
from findap_jax.host_malloc import keep_freed_host_memory
applied = keep_freed_host_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 512 << 20
def touch():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    return p
libc.free(touch())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
libc.free(p)
"""


def _probe(mode: str) -> tuple[bool, int]:
    env = {**os.environ, "FINDAP_HOST_MALLOC": mode}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt settings (Linux only)")
def test_freed_block_is_reused_without_page_faults():
    applied, faults = _probe("on")
    assert applied
    assert faults < 50          # the same pages again (a few for the interpreter itself)
    default_applied, default_faults = _probe("default")
    assert not default_applied
    assert default_faults > 1000   # glibc's default: a fresh mmap, faulted in page by page
