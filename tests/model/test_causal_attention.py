"""Causal block attention with its own backward pass: values and gradients equal the
textbook attention (fp32, atol 1e-5; bf16 within bf16's resolution), and the backward
pass keeps only q, k, v, the output, the mask and one log-sum-exp per query row."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from findap_jax.model.causal_attention import causal_attend
from findap_jax.model.layers import _attend_block, attend_reference


def _rand(key, *shape):
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float32)


def _packed_mask(b, t, cuts, pad):
    """Causal within documents split at `cuts`; the last `pad` positions are padding, which
    attends causally among itself (as the model's masks do: no row sees nothing)."""
    seg = np.zeros(t, np.int32)
    for i, (lo, hi) in enumerate(zip([0] + cuts, cuts + [t - pad]), start=1):
        seg[lo:hi] = i
    idx = np.arange(t)
    mask = (idx[:, None] >= idx[None, :]) & (seg[:, None] == seg[None, :])
    return jnp.asarray(np.broadcast_to(mask, (b, t, t)))


def _grads(fn, q, k, v, probe):
    return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * probe), (0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("t,block,per_row,heads", [(300, 128, False, (6, 2)), (300, 128, True, (6, 2)),
                                                   (64, 16, True, (4, 4)), (40, 64, False, (6, 1)),
                                                   (1, 8, False, (2, 1))])
def test_values_and_grads_equal_reference(t, block, per_row, heads):
    """Packed documents and padding rows; t not a multiple of the block, shorter than it,
    a single position; grouped, multi-head and multi-query heads."""
    h, kv = heads
    q, k, v = _rand(0, 3, t, h, 8), _rand(1, 3, t, kv, 8), _rand(2, 3, t, kv, 8)
    mask = _packed_mask(3, t, [t // 3, t // 2] if t > 4 else [], pad=min(5, t // 4))
    probe = _rand(3, 3, t, h, 8)
    out = jax.jit(lambda q, k, v: causal_attend(q, k, v, mask, block, per_row))(q, k, v)
    np.testing.assert_allclose(out, attend_reference(q, k, v, mask), atol=1e-5)
    ours = _grads(lambda q, k, v: causal_attend(q, k, v, mask, block, per_row), q, k, v, probe)
    ref = _grads(lambda q, k, v: attend_reference(q, k, v, mask), q, k, v, probe)
    for name, a, b in zip("qkv", ours, ref):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"d{name}")


def test_bf16_keeps_dtypes_and_tracks_fp32():
    t = 96
    q, k, v = _rand(0, 2, t, 4, 16), _rand(1, 2, t, 2, 16), _rand(2, 2, t, 2, 16)
    mask = _packed_mask(2, t, [40], pad=3)
    probe = _rand(3, 2, t, 4, 16)
    fn = lambda q, k, v: causal_attend(q, k, v, mask, 32, False)  # noqa: E731
    lo = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    assert fn(*lo).dtype == jnp.bfloat16
    for a, b in zip(_grads(fn, *lo, probe), _grads(fn, q, k, v, probe)):
        assert a.dtype == jnp.bfloat16
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03 * scale)


def _autodiff_blocks(mask, block):
    """The same query blocks left to autodiff (what causal_attend replaced)."""
    def fn(q, k, v):
        t = q.shape[1]
        return jnp.concatenate([_attend_block(q[:, s:s + block], k[:, :s + block], v[:, :s + block],
                                              mask[:, s:s + block, :s + block]) for s in range(0, t, block)], 1)
    return fn


def _residual_bytes(fn, *args):
    """Bytes the backward pass keeps: the leaves of jax.vjp's closure."""
    _, vjp = jax.vjp(fn, *args)
    return sum(x.nbytes for x in jax.tree.leaves(vjp) if hasattr(x, "nbytes"))


def test_backward_saves_no_scores():
    b, t, h, kv, d, block = 2, 256, 6, 2, 8, 64
    q, k, v = _rand(0, b, t, h, d), _rand(1, b, t, kv, d), _rand(2, b, t, kv, d)
    mask = _packed_mask(b, t, [100], pad=0)
    ours = _residual_bytes(lambda q, k, v: causal_attend(q, k, v, mask, block, False), q, k, v)
    # q, k, v, the output (q's size), the bool mask and the softmax's fp32 max and log-sum per
    # (row, head, query)
    expected = 2 * q.nbytes + k.nbytes + v.nbytes + mask.nbytes + 2 * b * h * t * 4
    assert q.nbytes + k.nbytes + v.nbytes <= ours <= expected, (ours, expected)
    assert _residual_bytes(_autodiff_blocks(mask, block), q, k, v) > 3 * ours


def test_a_row_that_sees_no_key_matches_autodiff_of_the_blocks():
    """Its forward output is the mean of the values up to its block's end; the backward pass
    must rebuild that uniform softmax and pass no gradient through masked scores."""
    b, t, block = 2, 48, 16
    q, k, v = _rand(0, b, t, 4, 8), _rand(1, b, t, 2, 8), _rand(2, b, t, 2, 8)
    mask = np.array(_packed_mask(b, t, [20], pad=0))
    mask[0, 5, :] = False     # first block
    mask[1, 40, :] = False    # last block
    mask = jnp.asarray(mask)
    probe = _rand(3, b, t, 4, 8)
    autodiff_blocks = _autodiff_blocks(mask, block)
    ours = lambda q, k, v: causal_attend(q, k, v, mask, block, False)  # noqa: E731
    np.testing.assert_allclose(ours(q, k, v), autodiff_blocks(q, k, v), atol=1e-5)
    for name, a, b_ in zip("qkv", _grads(ours, q, k, v, probe), _grads(autodiff_blocks, q, k, v, probe)):
        np.testing.assert_allclose(a, b_, atol=1e-5, err_msg=f"d{name}")
