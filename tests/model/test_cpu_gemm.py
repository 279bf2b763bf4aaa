"""cpu_gemm: fp32 matmuls through scipy's BLAS as an XLA FFI call equal float64 numpy
products, are picked only for the dots they were measured on, and build once."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from findap_jax.model import cpu_gemm
from findap_jax.model.layers import matmul

CONTRACTS = [((1,), (0,)), ((1,), (1,)), ((0,), (0,)), ((0,), (1,))]


def _operands(m, k, n, contract, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if contract[0] == (0,) else (m, k), np.float32)
    b = rng.standard_normal((n, k) if contract[1] == (1,) else (k, n), np.float32)
    want = (a.T if contract[0] == (0,) else a).astype(np.float64) @ (b.T if contract[1] == (1,) else b)
    return a, b, want


@pytest.mark.parametrize("contract", CONTRACTS)
@pytest.mark.parametrize("m,k,n", [(257, 130, 191), (33, 70, 301), (1, 5, 3)])
def test_dot_equals_float64_products(contract, m, k, n):
    """Every transposition, row blocks (m >= n) and column blocks (m < n) that do not divide
    evenly between threads, and a product too small to split; fp32 tolerance 1e-5 of k."""
    a, b, want = _operands(m, k, n, contract)
    got = jax.jit(lambda a, b: cpu_gemm.dot(a, b, contract))(a, b)
    assert got.shape == (m, n) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * k, rtol=1e-5)


def test_independent_dots_in_one_program_each_get_their_own_result():
    """Two products XLA may run at once on its thread pool, each split across that pool."""
    a, b, want_ab = _operands(300, 200, 100, CONTRACTS[0], seed=1)
    c, d, want_cd = _operands(90, 150, 400, CONTRACTS[2], seed=2)
    f = jax.jit(lambda a, b, c, d: (cpu_gemm.dot(a, b, CONTRACTS[0]), cpu_gemm.dot(c, d, CONTRACTS[2])))
    for _ in range(3):
        ab, cd = f(a, b, c, d)
        np.testing.assert_allclose(np.asarray(ab), want_ab, atol=2e-3, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(cd), want_cd, atol=2e-3, rtol=1e-5)


def test_vmap_runs_each_product():
    a = np.random.default_rng(3).standard_normal((3, 40, 20), np.float32)
    b = np.random.default_rng(4).standard_normal((3, 20, 30), np.float32)
    got = jax.jit(jax.vmap(lambda a, b: cpu_gemm.dot(a, b, CONTRACTS[0])))(a, b)
    np.testing.assert_allclose(np.asarray(got), np.einsum("bmk,bkn->bmn", a.astype(np.float64), b),
                               atol=1e-4, rtol=1e-5)


def test_which_dots_go_to_blas():
    f32 = jnp.zeros((128, 64), jnp.float32)
    w = jnp.zeros((64, 96), jnp.float32)
    c = CONTRACTS[0]
    with cpu_gemm.use("blas"):
        assert cpu_gemm.applies(f32, w, c, jnp.float32)
        assert not cpu_gemm.applies(f32.astype(jnp.bfloat16), w.astype(jnp.bfloat16), c, jnp.float32)
        assert not cpu_gemm.applies(f32, w, c, jnp.bfloat16)
        assert not cpu_gemm.applies(f32[:8], w, c, jnp.float32)                       # a few rows
        assert not cpu_gemm.applies(jnp.zeros((256, 64)), jnp.zeros((64, cpu_gemm.MAX_WIDE)), c, None)
        assert not cpu_gemm.applies(f32[None], w, c, jnp.float32)                     # 3-D
    with cpu_gemm.use("xla"):
        assert not cpu_gemm.applies(f32, w, c, jnp.float32)
    with cpu_gemm.use("auto"):   # auto needs a single-device process; the tests have 8 devices
        assert jax.device_count() > 1 and not cpu_gemm.applies(f32, w, c, jnp.float32)


@pytest.mark.parametrize("transpose_w", [False, True])
def test_layer_matmul_values_and_grads_equal_xla(transpose_w):
    """layers.matmul's forward and hand-written backward on BLAS equal them on XLA."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((4, 40, 96), np.float32))
    w = jnp.asarray(rng.standard_normal((80, 96) if transpose_w else (96, 80), np.float32))
    g = jnp.asarray(rng.standard_normal((4, 40, 80), np.float32))

    def run(name):
        f = jax.jit(lambda x, w: jax.vjp(lambda x, w: matmul(x, w, transpose_w), x, w))
        with cpu_gemm.use(name):
            y, back = f(x, w)
            assert (cpu_gemm.TARGET in f.lower(x, w).as_text()) == (name == "blas")
        return (y,) + back(g)
    for ours, xla in zip(run("blas"), run("xla")):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(xla), atol=1e-4, rtol=1e-5)


def test_bad_settings_are_named(monkeypatch):
    monkeypatch.setenv(cpu_gemm.ENV, "mkl")
    with pytest.raises(ValueError, match="FINDAP_CPU_MATMUL='mkl'"):
        cpu_gemm.library()
    with pytest.raises(ValueError, match="unknown CPU matmul library 'eigen'"):
        with cpu_gemm.use("eigen"):
            pass


def test_build_is_cached_and_a_failing_compiler_is_reported(tmp_path, monkeypatch):
    first = cpu_gemm._build(tmp_path / "ok")
    stamp = first.stat().st_mtime_ns
    assert cpu_gemm._build(tmp_path / "ok") == first and first.stat().st_mtime_ns == stamp
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(RuntimeError, match="building .*cpu_gemm.cc failed"):
        cpu_gemm._build(tmp_path / "bad")
    assert not any((tmp_path / "bad").rglob("*.so"))     # nothing half-written left behind


def test_auto_picks_blas_on_an_intel_cpu_in_a_single_device_process():
    """What `auto` does in a fresh one-device process: BLAS on Intel CPUs (where it was
    measured faster), XLA elsewhere."""
    code = ("import jax, jax.numpy as jnp; from findap_jax.model.layers import matmul;"
            "x = jnp.ones((64, 64)); print('findap_cpu_gemm' in jax.jit(matmul).lower(x, x).as_text())")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_gemm.ENV)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(cpu_gemm._cpu_vendor() == "GenuineIntel")
