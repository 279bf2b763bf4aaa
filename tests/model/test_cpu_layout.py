"""cpu_layout: the row-major copies keep values, and with them every matmul of a bf16
backward pass compiles to a bf16 dot on XLA:CPU (without them XLA upcasts some to fp32)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from findap_jax.model import causal_attention, cpu_layout, layers
from findap_jax.model.causal_attention import causal_attend
from findap_jax.model.layers import matmul

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's dot support rules")


def _rand(seed, *shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.parametrize("shape,perm", [((6, 10), (1, 0)), ((2, 6, 10), (0, 2, 1)), ((2, 3, 6, 10), (0, 2, 3, 1))])
def test_row_major_keeps_values(shape, perm):
    x = _rand(0, *shape).astype(jnp.bfloat16)
    fn = jax.jit(lambda a: cpu_layout.row_major(a.transpose(perm)))
    np.testing.assert_array_equal(np.asarray(fn(x), np.float32), np.asarray(x, np.float32).transpose(perm))
    assert cpu_layout.row_major(jnp.ones(3)).shape == (3,)


def _dot_operand_types(hlo: str) -> list[tuple[str, str]]:
    """(lhs, rhs) element types of every dot in compiled HLO text."""
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
    return [(types[a], types[b]) for a, b in re.findall(r"\bdot\(%([\w.\-]+), %([\w.\-]+)\)", hlo)]


def _bf16_backward_dots(monkeypatch, copies: bool):
    if not copies:
        for mod in (layers, causal_attention):
            monkeypatch.setattr(mod, "bf16_on_cpu", lambda dtype: False)
    x, w = _rand(0, 2, 64, 48).astype(jnp.bfloat16), _rand(1, 48, 96)
    head = _rand(2, 96, 48)
    q, k, v = (_rand(i, 1, 64, h, 16).astype(jnp.bfloat16) for i, h in ((3, 4), (4, 2), (5, 2)))
    mask = jnp.tril(jnp.ones((1, 64, 64), bool))

    def loss(x, w, head, q, k, v):
        y = matmul(x, w, False, jnp.float32) + matmul(x, head, True, jnp.float32)
        return jnp.sum(y) + jnp.sum(causal_attend(q, k, v, mask, 32, False).astype(jnp.float32))
    hlo = jax.jit(jax.grad(loss, range(6))).lower(x, w, head, q, k, v).compile().as_text()
    return _dot_operand_types(hlo)


def test_bf16_backward_runs_every_dot_in_bf16(monkeypatch):
    dots = _bf16_backward_dots(monkeypatch, copies=True)
    assert len(dots) >= 12
    assert all(t == ("bf16", "bf16") for t in dots), dots


def test_without_the_copies_xla_upcasts_the_weight_and_key_value_gradients(monkeypatch):
    """The control: if XLA ever runs transposed bf16 dots natively, this fails and the
    copies can go."""
    dots = _bf16_backward_dots(monkeypatch, copies=False)
    assert sum(t == ("f32", "f32") for t in dots) >= 4, dots
