"""Splash attention (the TPU Pallas kernel, run in Pallas' interpreter on CPU) equals the
textbook attention in values and gradients on packed documents, fp32, atol 1e-5; in the
model, on one device and sharded over batch and heads."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from findap_jax.generation.sampler import generate_ids
from findap_jax.model import Llama, get_preset
from findap_jax.model.layers import attend, attend_reference
from findap_jax.model.splash import Segments, _block, padded_length, splash_attend
from findap_jax.parallel import make_mesh, shard_module


def _rand(key, *shape):
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float32)


def _packed(b, t, cuts, pad):
    """Segment ids 1, 2, ... cut at `cuts`, `pad` trailing padding (id 0), and the mask they mean."""
    seg = np.zeros((b, t), np.int32)
    for i, (a, z) in enumerate(zip([0] + cuts, cuts + [t - pad]), start=1):
        seg[:, a:z] = i
    seg[1:, : cuts[0]] = 7   # another row's first document has another id
    idx = np.arange(t)
    mask = (idx[None, :, None] >= idx[None, None, :]) & (seg[:, :, None] == seg[:, None, :])
    return jnp.asarray(seg), jnp.asarray(mask)


def test_blocks_divide_the_padded_length():
    assert [_block(t) for t in (128, 256, 384, 512, 640, 2048)] == [128, 256, 384, 512, 128, 512]
    assert [padded_length(t) for t in (1, 200, 640, 1000, 8000, 8064)] == [128, 256, 640, 1024, 8192, 8192]


@pytest.mark.parametrize("t", [200, 256])
def test_splash_equals_reference_values_and_grads(t):
    """t=200 is padded to 256 inside; 3 documents, trailing padding, GQA 4 heads over 2."""
    q, k, v = _rand(0, 2, t, 4, 16), _rand(1, 2, t, 2, 16), _rand(2, 2, t, 2, 16)
    seg, mask = _packed(2, t, [t // 3, t // 2], pad=7)
    probe = _rand(3, 2, t, 4, 16)
    out = jax.jit(splash_attend)(q, k, v, seg)
    ref = attend_reference(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    loss = lambda fn: jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * probe), (0, 1, 2)))  # noqa: E731
    ours = loss(lambda q, k, v: attend(q, k, v, Segments(seg), causal=True, impl="splash"))(q, k, v)
    theirs = loss(lambda q, k, v: attend_reference(q, k, v, mask))(q, k, v)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_splash_refuses_what_it_cannot_attend():
    q, k = _rand(0, 1, 8, 4, 16), _rand(1, 1, 8, 2, 16)
    mask = jnp.ones((1, 8, 8), bool)
    with pytest.raises(ValueError, match="mask=Segments"):
        attend(q, k, k, mask, causal=True, impl="splash")       # a boolean mask
    with pytest.raises(ValueError, match="mask=Segments"):
        attend(q, k, k, Segments(jnp.ones((1, 8), jnp.int32)), impl="splash")   # not causal
    with pytest.raises(ValueError, match="q has 8 positions, k 12"):
        splash_attend(q, _rand(1, 1, 12, 2, 16), _rand(1, 1, 12, 2, 16), jnp.ones((1, 8), jnp.int32))


def _model_case():
    cfg = get_preset("tiny").replace(tie_word_embeddings=False)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 40)))
    segs = jnp.asarray(np.repeat([[1] * 15 + [2] * 20 + [0] * 5], 8, axis=0))
    return cfg, ids, segs


def test_model_with_splash_keeps_logits_and_decodes_on_the_xla_path():
    cfg, ids, segs = _model_case()
    base = Llama(cfg, rngs=nnx.Rngs(0))(ids, segment_ids=segs)
    model = Llama(cfg, rngs=nnx.Rngs(0), attention="splash")
    assert "pallas_call" in str(jax.make_jaxpr(lambda x, s: model(x, segment_ids=s))(ids, segs))
    np.testing.assert_allclose(model(ids, segment_ids=segs), base, atol=1e-5)
    prompts = [list(map(int, ids[0, :12])), list(map(int, ids[1, :9]))]   # prefill + decode + cache
    kw = dict(eos_ids=[], pad_id=0, max_new_tokens=4, layers=None)
    assert generate_ids(model, prompts, **kw) == generate_ids(Llama(cfg, rngs=nnx.Rngs(0)), prompts, **kw)


def test_sharded_splash_equals_single_device():
    """fsdp=4 x tensor=2 on 8 virtual devices: rows split 4 ways, the 4 q / 2 kv heads 2 ways;
    logits, and the weight gradients of a probe loss over 82K logits (atol 1e-4, rtol 1e-5:
    those gradients reach ~100, where fp32 sums in another order differ by ~1e-6 relative)."""
    cfg, ids, segs = _model_case()
    probe = _rand(5, 8, 40, cfg.vocab_size)

    def loss(m, x, s):
        return jnp.sum(m(x, segment_ids=s) * probe)

    base = Llama(cfg, rngs=nnx.Rngs(0))
    ref, ref_g = base(ids, segment_ids=segs), nnx.grad(loss)(base, ids, segs)
    mesh = make_mesh(dict(data=1, fsdp=4, tensor=2))
    model = shard_module(Llama(cfg, rngs=nnx.Rngs(0), attention="splash"), mesh)
    with jax.set_mesh(mesh):
        assert "shard_map" in str(jax.make_jaxpr(lambda x, s: model(x, segment_ids=s))(ids, segs))
        out = nnx.jit(lambda m, x, s: m(x, segment_ids=s))(model, ids, segs)
        grads = nnx.jit(nnx.grad(loss))(model, ids, segs)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_g)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-5)
