"""bench/profile_step.py reads matmul FLOPs off compiled HLO; check them against the shapes."""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from profile_step import dot_flops, op_names  # noqa: E402


@pytest.mark.parametrize("fn,shapes,flops", [
    (lambda a, b: a @ b, ((64, 32), (32, 48)), 2 * 64 * 32 * 48),
    (lambda a, b: jnp.einsum("bmk,bnk->bmn", a, b), ((3, 16, 8), (3, 24, 8)), 2 * 3 * 16 * 8 * 24),
    (lambda a, b: jax.nn.relu(a.T @ b) + 1.0, ((40, 16), (40, 12)), 2 * 16 * 40 * 12),
])
def test_dot_flops_match_the_shapes(fn, shapes, flops):
    args = [jnp.ones(s, jnp.float32) for s in shapes]
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    found = dot_flops(hlo)
    assert sum(f for f, _ in found.values()) == flops, found
    assert all(" -> " in desc for _, desc in found.values())


def test_op_names_name_the_jax_op():
    hlo = jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(jnp.ones((8, 8)), jnp.ones((8, 8))).compile().as_text()
    assert any("dot_general" in v for v in op_names(hlo).values())
