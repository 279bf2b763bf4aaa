"""Layers: the hand-written matmul backward and the blocked attention equal the textbook
forms (autodiff of einsum, full-matrix GQA attention) in values and gradients, fp32."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from findap_jax.model import Llama, get_preset
from findap_jax.model.layers import (apply_rope, attend, attend_cached, attend_reference, matmul, rms_norm,
                                      rope_inv_freq, rope_tables, swiglu, to_cache_layout)


def _rand(key, *shape):
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float32)


def test_rope_equals_rotate_half_in_numpy_and_its_gradient_the_inverse_rotation():
    """The shared cos/sin tables (a conditional on CPU) rotate each (x_i, x_{i+D/2}) pair by
    position * inv_freq_i, as HF's rotate_half does; positions need not be sorted (packed rows)."""
    cfg = get_preset("tiny")
    inv = rope_inv_freq(cfg)
    pos = jnp.asarray([[0, 1, 2, 3, 0, 1], [7, 300, 5, 4096, 2, 9]], jnp.int32)
    x = _rand(3, 2, 6, 4, cfg.head_dim)
    got = jax.jit(lambda x, p: apply_rope(x, rope_tables(p, inv)))(x, pos)
    ang = np.asarray(pos, np.float64)[..., None, None] * np.asarray(inv, np.float64)   # [B, T, 1, D/2]
    x1, x2 = np.split(np.asarray(x, np.float64), 2, axis=-1)
    want = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)
    np.testing.assert_allclose(got, want, atol=2e-5)   # fp32 angles up to 4096 rad
    assert apply_rope(x.astype(jnp.bfloat16), rope_tables(pos, inv)).dtype == jnp.bfloat16
    # a rotation's transpose is the inverse rotation: the gradient of <rope(x), g> is rope_{-p}(g)
    g = _rand(4, 2, 6, 4, cfg.head_dim)
    grad = jax.grad(lambda x: jnp.sum(apply_rope(x, rope_tables(pos, inv)) * g))(x)
    np.testing.assert_allclose(grad, apply_rope(g, rope_tables(-pos, inv)), atol=1e-5)


@pytest.mark.parametrize("transpose_w", [False, True])
def test_matmul_values_and_grads_equal_einsum(transpose_w):
    x, w = _rand(0, 3, 5, 8), _rand(1, *((6, 8) if transpose_w else (8, 6)))
    spec = "bte,ne->btn" if transpose_w else "bte,en->btn"
    probe = _rand(2, 3, 5, 6)

    def ours(x, w):
        return jnp.sum(jnp.sin(matmul(x, w, transpose_w)) * probe)

    def ref(x, w):
        return jnp.sum(jnp.sin(jnp.einsum(spec, x, w)) * probe)

    np.testing.assert_allclose(matmul(x, w, transpose_w), jnp.einsum(spec, x, w), atol=1e-5)
    for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_matmul_keeps_dtypes_in_mixed_precision():
    x, w = _rand(0, 4, 8).astype(jnp.bfloat16), _rand(1, 8, 6).astype(jnp.bfloat16)
    assert matmul(x, w, False, jnp.float32).dtype == jnp.float32
    gx, gw = jax.grad(lambda x, w: jnp.sum(matmul(x, w, False, jnp.float32)), (0, 1))(x, w)
    assert gx.dtype == gw.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(gw, np.float32), np.asarray(
        jnp.broadcast_to(jnp.sum(x.astype(jnp.float32), 0)[:, None], (8, 6))), rtol=2e-2)


@pytest.mark.parametrize("transpose_w", [False, True])
def test_matmul_with_the_callers_weight_cast_is_the_same_computation(transpose_w):
    """`w_cast` (the fp32 weight cast to bf16 by the caller) changes nothing: bit-identical
    output and gradients, the weight's gradient fp32; a w_cast that is not w in x's dtype
    is refused."""
    x = _rand(0, 4, 8).astype(jnp.bfloat16)
    w = _rand(1, *((6, 8) if transpose_w else (8, 6)))
    probe = _rand(2, 4, 6)
    loss = lambda x, w, c: jnp.sum(matmul(x, w, transpose_w, jnp.float32, c) * probe)  # noqa: E731
    np.testing.assert_array_equal(matmul(x, w, transpose_w, jnp.float32, w.astype(jnp.bfloat16)),
                                  matmul(x, w, transpose_w, jnp.float32))
    ga = jax.grad(loss, (0, 1))(x, w, w.astype(jnp.bfloat16))
    gb = jax.grad(loss, (0, 1))(x, w, None)
    assert ga[1].dtype == jnp.float32
    for a, b in zip(ga, gb):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    with pytest.raises(ValueError, match="w_cast"):
        matmul(x, w, transpose_w, jnp.float32, w)   # fp32: not x's dtype


def _packed_mask(t, cuts, pad):
    seg = np.zeros(t, np.int32)
    for i, (a, b) in enumerate(zip([0] + cuts, cuts + [t - pad]), start=1):
        seg[a:b] = i
    idx = np.arange(t)
    mask = (idx[:, None] >= idx[None, :]) & (seg[:, None] == seg[None, :])
    return jnp.asarray(np.stack([mask, mask]))


@pytest.mark.parametrize("t,block,per_row", [(300, 128, False), (64, 16, False), (40, 64, False),
                                             (300, 128, True), (64, 16, True)])
def test_blocked_causal_attention_equals_reference(t, block, per_row):
    """Packed documents and trailing padding; t not a multiple of the block; batched or
    one row at a time (the single-CPU-device path)."""
    q, k, v = _rand(0, 2, t, 6, 8), _rand(1, 2, t, 2, 8), _rand(2, 2, t, 2, 8)
    mask = _packed_mask(t, [t // 3, t // 2], pad=5)
    probe = _rand(3, 2, t, 6, 8)
    out = jax.jit(lambda q, k, v: attend(q, k, v, mask, causal=True, block=block, per_row=per_row))(q, k, v)
    np.testing.assert_allclose(out, attend_reference(q, k, v, mask), atol=1e-5)
    f = lambda fn: jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * probe), (0, 1, 2)))  # noqa: E731
    ours = f(lambda q, k, v: attend(q, k, v, mask, causal=True, block=block, per_row=per_row))(q, k, v)
    ref = f(lambda q, k, v: attend_reference(q, k, v, mask))(q, k, v)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_attention_over_a_longer_cache_and_other_impls_equal_reference():
    q, k, v = _rand(0, 2, 3, 4, 8), _rand(1, 2, 10, 2, 8), _rand(2, 2, 10, 2, 8)
    mask = jnp.asarray(np.random.default_rng(0).random((2, 3, 10)) < 0.7).at[:, :, 0].set(True)
    ref = attend_reference(q, k, v, mask)
    np.testing.assert_allclose(attend(q, k, v, mask), ref, atol=1e-5)
    np.testing.assert_allclose(attend(q, k, v, mask, impl="dot_product_attention"), ref, atol=1e-5)
    with pytest.raises(ValueError, match="unknown attention impl 'flash'"):
        attend(q, k, v, mask, impl="flash")


def test_dot_product_attention_asks_for_cudnn_where_it_applies_and_falls_back(monkeypatch, caplog):
    """jax's default implementation is its XLA form, so cuDNN is asked for by name on a GPU in
    bf16/fp16; a refusal (its shape/dtype/version checks) falls back to XLA's with a warning."""
    from findap_jax.model import layers
    assert layers._cudnn_applies(jnp.bfloat16, 6, 6) == (jax.default_backend() == "gpu")
    assert not layers._cudnn_applies(jnp.float32, 6, 6)
    assert not layers._cudnn_applies(jnp.bfloat16, 5, 6)   # cuDNN trains with a bias at even lengths only
    q, k, v = _rand(0, 2, 6, 4, 8), _rand(1, 2, 6, 2, 8), _rand(2, 2, 6, 2, 8)
    mask = jnp.tril(jnp.ones((6, 6), bool))[None].repeat(2, 0)
    ref = attend_reference(q, k, v, mask)
    real, calls = jax.nn.dot_product_attention, []

    def fake(q, k, v, *, implementation=None, refuse=False, **kw):
        calls.append((implementation, kw["is_causal"], kw["mask"].shape))
        if implementation == "cudnn" and refuse:
            raise NotImplementedError("no cuDNN here")
        return real(q, k, v, **kw)
    monkeypatch.setattr(layers, "_cudnn_applies", lambda dtype, t, s: True)
    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    np.testing.assert_allclose(attend(q, k, v, mask, causal=True, impl="dot_product_attention"), ref, atol=1e-5)
    assert calls == [("cudnn", True, (2, 1, 6, 6))]
    calls.clear()
    monkeypatch.setattr(jax.nn, "dot_product_attention", functools.partial(fake, refuse=True))
    with caplog.at_level("WARNING"):
        np.testing.assert_allclose(attend(q, k, v, mask, causal=True, impl="dot_product_attention"), ref,
                                   atol=1e-5)
    assert [c[0] for c in calls] == ["cudnn", None]
    assert "cuDNN attention does not apply (no cuDNN here)" in caplog.text


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_attention_over_the_cache_layouts_equals_reference(impl):
    q, k, v = _rand(0, 2, 3, 4, 8), _rand(1, 2, 10, 2, 8), _rand(2, 2, 10, 2, 8)
    mask = jnp.asarray(np.random.default_rng(1).random((2, 3, 10)) < 0.6).at[:, :, 0].set(True)
    ck, cv = to_cache_layout(k, v)
    assert ck.shape == (2, 2, 8, 10) and cv.shape == (2, 2, 10, 8)
    np.testing.assert_allclose(attend_cached(q, ck, cv, mask, impl=impl), attend_reference(q, k, v, mask),
                               atol=1e-5)


def test_model_attention_choice_keeps_logits():
    cfg = get_preset("tiny")
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 40)))
    base = Llama(cfg, rngs=nnx.Rngs(0))(ids)
    for impl in ("reference", "dot_product_attention"):
        np.testing.assert_allclose(Llama(cfg, rngs=nnx.Rngs(0), attention=impl)(ids), base, atol=1e-5)
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        Llama(cfg, attention="nope")


def test_train_flops_count_the_head_tied_or_not():
    from findap_jax.train.metrics import train_flops_per_token
    tied = get_preset("smollm2-135m")
    untied = tied.replace(tie_word_embeddings=False)
    assert train_flops_per_token(tied, 512) == train_flops_per_token(untied, 512)
    head = 6 * tied.vocab_size * tied.hidden_size
    assert train_flops_per_token(tied, 512) > head + 6 * tied.num_params(include_embedding=False)


def test_rms_norm_and_swiglu_backward_equal_autodiff():
    """The hand-written backward passes equal autodiff of the plain expressions (fp32)."""
    x, scale, probe = _rand(0, 3, 5, 8), 1.0 + 0.1 * _rand(1, 8), _rand(2, 3, 5, 8)

    def plain_norm(x, s):
        return s * (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-5))

    ours = lambda x, s: jnp.sum(jnp.sin(rms_norm(x, s, 1e-5, jnp.float32)) * probe)
    ref = lambda x, s: jnp.sum(jnp.sin(plain_norm(x, s)) * probe)
    np.testing.assert_allclose(rms_norm(x, scale, 1e-5, jnp.float32), plain_norm(x, scale), atol=1e-6)
    for a, b in zip(jax.grad(ours, (0, 1))(x, scale), jax.grad(ref, (0, 1))(x, scale)):
        np.testing.assert_allclose(a, b, atol=1e-5)

    g, u = 3 * _rand(3, 3, 5, 8), _rand(4, 3, 5, 8)
    ours = lambda g, u: jnp.sum(jnp.sin(swiglu(g, u)) * probe)
    ref = lambda g, u: jnp.sum(jnp.sin(jax.nn.silu(g) * u) * probe)
    np.testing.assert_allclose(swiglu(g, u), jax.nn.silu(g) * u, atol=1e-6)
    for a, b in zip(jax.grad(ours, (0, 1))(g, u), jax.grad(ref, (0, 1))(g, u)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("shape,spec", [((8, 3, 2), "bte,end->btnd"), ((3, 2, 8), "btnd,nde->bte")])
def test_matmul_takes_multi_dim_weights(shape, spec):
    """[E, heads, D] and [heads, D, E] weights are flattened inside; the gradient keeps
    the weight's shape."""
    w = _rand(1, *shape)
    x = _rand(0, 3, 5, 8) if shape[0] == 8 else _rand(0, 3, 5, 3, 2)
    x2 = x if shape[0] == 8 else x.reshape(3, 5, 6)

    def ours(x, w):
        return jnp.sum(jnp.sin(matmul(x.reshape(x2.shape), w)))

    ref = lambda x, w: jnp.sum(jnp.sin(jnp.einsum(spec, x, w)))
    np.testing.assert_allclose(matmul(x2, w).reshape(jnp.einsum(spec, x, w).shape),
                               jnp.einsum(spec, x, w), atol=1e-5)
    ga, gb = jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w)
    assert ga[1].shape == w.shape
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a, b, atol=1e-5)
