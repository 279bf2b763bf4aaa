"""fp32 matmuls on XLA:CPU through the BLAS that scipy ships (OpenBLAS), as an XLA FFI call.

On an Intel Xeon with AMX (5th generation, 2 cores) XLA's fp32 matmul library (YNNPACK)
ran the SmolLM2 layers' matmuls at 0.6-0.9x the rate of OpenBLAS's sgemm on the same
shapes, and torch (MKL) trains faster there for that reason (README, Results). This module
runs those dots through `cpu_gemm.cc`, an FFI handler built on first use with the C++
compiler, fed scipy's `cython_blas.sgemm` (the BLAS entry point jaxlib's own LAPACK calls
use). The handler splits each product across XLA's intra-op threads and runs OpenBLAS
single-threaded in each: left to thread by itself, OpenBLAS's threads and XLA's spin on
the same two cores in turn, and the SFT step ran 1.26x slower instead of faster. Its
thread count is set to 1 for that (`openblas_set_num_threads_local`, which in the pthreads
builds of scipy's wheels applies to the whole process: other users of scipy's BLAS in a
process that ran these matmuls run single-threaded too).

Which dots: fp32 x fp32 -> fp32, 2-D, every dimension at least `MIN_DIM` (decoding's
products of a few rows stay on XLA) and an output narrower than `MAX_WIDE` (OpenBLAS ran the LM
head's [256, 576] x [576, 49152] chunks at 0.75x XLA's rate). `auto` takes a single-device
process only: XLA's SPMD partitioner runs a custom call on whole, gathered operands.

`FINDAP_CPU_MATMUL` picks the library: `auto` (the default) uses BLAS where it was
measured faster, an Intel x86 CPU with an OpenBLAS that can set its thread count, and falls back
to XLA when the handler cannot be built; `blas` insists (an error if it cannot be built);
`xla` never uses it. `use(...)` sets it for a block of code; the choice is made when a
function is traced, so it is fixed in each compiled step.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

LIBRARIES = ("auto", "xla", "blas")
ENV = "FINDAP_CPU_MATMUL"
TARGET = "findap_cpu_gemm"
MIN_DIM = 16
MAX_WIDE = 16384
_SOURCE = Path(__file__).with_name("cpu_gemm.cc")
_setting: list[str | None] = [None]    # set by `use`; None reads the environment


def library() -> str:
    """The library setting in force: `use(...)`'s, else $FINDAP_CPU_MATMUL, else auto."""
    name = _setting[0] or os.environ.get(ENV, "auto") or "auto"
    if name not in LIBRARIES:
        raise ValueError(f"{ENV}={name!r}: choose one of {LIBRARIES}")
    return name


@contextlib.contextmanager
def use(name: str):
    """Trace the code in this block with fp32 CPU matmuls on `name` (one of LIBRARIES)."""
    if name not in LIBRARIES:
        raise ValueError(f"unknown CPU matmul library {name!r}; choose one of {LIBRARIES}")
    before, _setting[0] = _setting[0], name
    try:
        yield
    finally:
        _setting[0] = before


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _capsule_pointer(capsule) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def _build(cache_dir: Path) -> Path:
    """cpu_gemm.cc compiled against this jaxlib's FFI headers, cached by content."""
    key = hashlib.sha256(_SOURCE.read_bytes() + jax.__version__.encode()
                         + platform.machine().encode()).hexdigest()[:16]
    out = cache_dir / f"cpu_gemm-{key}.so"
    if out.exists():
        return out
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler (set CXX or install g++) to build "
                           f"{_SOURCE.name}; set {ENV}=xla to run XLA's own matmuls")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        part = Path(tmp) / out.name
        cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
               str(_SOURCE), "-o", str(part), "-ldl"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building {_SOURCE} failed ({' '.join(cmd)}):\n{done.stderr[-4000:]}")
        os.replace(part, out)        # atomic: processes building at once each land a whole file
    return out


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("FINDAP_JAX_KERNEL_DIR") or os.path.join(base, "findap_jax"))


@functools.lru_cache(maxsize=None)
def _handler() -> tuple[bool, bool]:
    """Builds, loads and registers the handler once: (registered, splits across threads)."""
    from scipy.linalg import cython_blas    # loads scipy's BLAS into the process
    lib = ctypes.CDLL(str(_build(_cache_dir())))
    lib.findap_cpu_gemm_init.argtypes, lib.findap_cpu_gemm_init.restype = [ctypes.c_void_p], ctypes.c_bool
    splits = lib.findap_cpu_gemm_init(_capsule_pointer(cython_blas.__pyx_capi__["sgemm"]))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.FindapCpuGemm), platform="cpu")
    return True, bool(splits)


@functools.lru_cache(maxsize=None)
def _auto_available() -> bool:
    if _cpu_vendor() != "GenuineIntel":
        return False
    try:
        return all(_handler())
    except (RuntimeError, OSError, ImportError) as e:
        log.warning("fp32 CPU matmuls stay on XLA: %s", e)
        return False


def _dims(a, b, contract) -> tuple[int, int, int, bool, bool]:
    (ca,), (cb,) = contract
    trans_a, trans_b = ca == 0, cb == 1
    m = a.shape[1 - ca]
    n = b.shape[0] if trans_b else b.shape[1]
    return m, n, a.shape[ca], trans_a, trans_b


def applies(a, b, contract, out_dtype) -> bool:
    """Whether `dot(a, b, contract)` runs on BLAS under the current setting."""
    name = library()
    if name == "xla" or jax.default_backend() != "cpu":
        return False
    if a.ndim != 2 or b.ndim != 2 or len(contract[0]) != 1 or len(contract[1]) != 1:
        return False
    if not (a.dtype == b.dtype == jnp.float32 and np.dtype(out_dtype or a.dtype) == np.float32):
        return False
    m, n, k, _, _ = _dims(a, b, contract)
    if min(m, n, k) < MIN_DIM or max(m, n) >= MAX_WIDE:
        return False
    if name == "blas":
        _handler()
        return True
    return jax.device_count() == 1 and _auto_available()


def dot(a, b, contract):
    """a [m, k] (or [k, m]) times b [k, n] (or [n, k]) -> fp32 [m, n] on BLAS; `contract`
    names one contracting axis of each, as in `lax.dot_general`."""
    _handler()
    m, n, _, trans_a, trans_b = _dims(a, b, contract)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32),
                            vmap_method="sequential")
    return call(a, b, trans_a=trans_a, trans_b=trans_b)
