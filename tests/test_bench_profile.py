"""bench/profile_step.py reads matmul FLOPs off compiled HLO; check them against the shapes."""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from profile_step import by_shape, by_source, dot_flops, op_names  # noqa: E402


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


def test_by_source_sums_the_ops_of_one_jax_op():
    names = {"fusion.1": "fwd/mul", "fusion.2": "fwd/mul", "ynn_fusion.3": "fwd/dot_general"}
    table = by_source({"fusion.1": 30.0, "fusion.2": 20.0, "ynn_fusion.3": 45.0, "copy.4": 5.0},
                      {"fusion.1": 1, "fusion.2": 2, "ynn_fusion.3": 4, "copy.4": 1}, names, {"ynn_fusion.3"})
    assert table == [("fwd/mul", 50.0, 3), ("MATMUL fwd/dot_general", 45.0, 4), ("?", 5.0, 1)]


def test_by_shape_groups_matmuls_and_rates_them():
    desc = "bf16[8,4] x bf16[4,2] -> f32[8,2]"
    matmuls = {"ynn_fusion.1": (2e6, desc), "ynn_fusion.2": (2e6, desc), "dot.3": (1e6, "f32[a] x f32[b] -> f32[c]")}
    table = by_shape({"ynn_fusion.1": 10.0, "ynn_fusion.2": 30.0, "dot.3": 20.0, "fusion.4": 99.0},
                     {"ynn_fusion.1": 1, "ynn_fusion.2": 3, "dot.3": 2, "fusion.4": 1}, matmuls)
    # times in microseconds: 4 runs of 2 MFLOP in 40 us = 200 GFLOP/s; 2 MFLOP in 20 us = 100
    assert table == [(desc, 40.0, 4, 200.0), ("f32[a] x f32[b] -> f32[c]", 20.0, 2, 100.0)]
