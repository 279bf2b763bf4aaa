"""KV-cache decoding equals recomputing the full forward."""
import jax.numpy as jnp
import pytest
import numpy as np
from flax import nnx

from findap_jax.model import KVCache, Llama, get_preset


def test_incremental_decode_matches_full_forward():
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, (2, 10)))
    full = model(ids)
    cache = KVCache.init(cfg, 2, 16)
    pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
    logits, cache = model(ids[:, :6], positions=pos[:, :6], cache=cache)
    np.testing.assert_allclose(logits, full[:, :6], atol=1e-5)
    for t in range(6, 10):
        step, cache = model(ids[:, t:t + 1], positions=pos[:, t:t + 1], cache=cache)
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)
    assert int(cache.index) == 10


def test_cached_steps_without_positions_go_on_from_the_cache():
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, (2, 8)))
    full = model(ids)
    _, cache = model(ids[:, :5], cache=KVCache.init(cfg, 2, 16))
    for t in range(5, 8):
        step, cache = model(ids[:, t:t + 1], cache=cache)
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)


def test_unrolled_layers_with_per_layer_cache_match_scanned_stack():
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(1))
    ids = jnp.asarray(np.random.default_rng(1).integers(3, cfg.vocab_size, (2, 9)))
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    layers = model.unstack_layers()
    np.testing.assert_allclose(model(ids, layers=layers), model(ids), atol=1e-5)
    scanned, unrolled = KVCache.init(cfg, 2, 12), KVCache.init(cfg, 2, 12, per_layer=True)
    a, scanned = model(ids[:, :5], positions=pos[:, :5], cache=scanned)
    b, unrolled = model(ids[:, :5], positions=pos[:, :5], cache=unrolled, layers=layers)
    np.testing.assert_allclose(a, b, atol=1e-5)
    for t in range(5, 9):
        a, scanned = model(ids[:, t:t + 1], positions=pos[:, t:t + 1], cache=scanned)
        b, unrolled = model(ids[:, t:t + 1], positions=pos[:, t:t + 1], cache=unrolled, layers=layers)
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.stack(unrolled.k), scanned.k, atol=1e-5)


def test_unrolled_layers_refuse_a_stacked_cache():
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(1))
    ids = jnp.ones((1, 3), jnp.int32)
    with pytest.raises(ValueError, match="per-layer KVCache"):
        model(ids, cache=KVCache.init(cfg, 1, 8), layers=model.unstack_layers())


def test_prefill_attends_the_prompt_only_and_fills_the_same_cache():
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(2))
    ids = jnp.asarray(np.random.default_rng(2).integers(3, cfg.vocab_size, (2, 6)))
    segs = jnp.asarray([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])   # row 0 left-padded
    pos = jnp.maximum(jnp.cumsum(segs, axis=1) - 1, 0)
    for layers in (None, model.unstack_layers()):
        per_layer = layers is not None
        a, ca = model(ids, pos, segs, cache=KVCache.init(cfg, 2, 10, per_layer=per_layer), layers=layers)
        b, cb = model(ids, pos, segs, cache=KVCache.init(cfg, 2, 10, per_layer=per_layer), layers=layers,
                      prefill=True)
        real = np.asarray(segs, bool)
        np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=1e-5)
        ka, kb = ((np.stack(c.k) if per_layer else np.asarray(c.k)).transpose(0, 1, 4, 2, 3) for c in (ca, cb))
        np.testing.assert_allclose(ka[:, :, :6][:, real], kb[:, :, :6][:, real], atol=1e-5)  # real slots
        nxt = jnp.asarray([[5], [7]])
        np.testing.assert_allclose(model(nxt, pos[:, -1:] + 1, cache=ca, layers=layers)[0],
                                   model(nxt, pos[:, -1:] + 1, cache=cb, layers=layers)[0], atol=1e-5)


@pytest.mark.parametrize("unrolled,attention", [(False, "xla"), (True, "xla"), (True, "reference")])
def test_shared_prefix_read_beside_the_cache_equals_whole_prompts(unrolled, attention):
    """Two prompt starts stored once, three rows continuing them (rows 0 and 2 the same
    start): extend and decode logits equal prefilling every whole prompt."""
    from findap_jax.generation.sampler import _left_padded
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(3), attention=attention)
    layers = model.unstack_layers() if unrolled else None
    rng = np.random.default_rng(3)
    starts = [list(rng.integers(3, 200, 6)), list(rng.integers(3, 200, 4))]
    group = [0, 1, 0]
    rests = [list(rng.integers(3, 200, n)) for n in (3, 2, 1)]
    whole = [starts[j] + r for j, r in zip(group, rests)]
    ids, pos, segs = _left_padded(whole, 9, 0)
    ref, ref_cache = model(ids, pos, segs, cache=KVCache.init(cfg, 3, 12, per_layer=unrolled), layers=layers,
                           prefill=True)
    ids, pos, segs = _left_padded(starts, 6, 0)
    _, pre = model(ids, pos, segs, cache=KVCache.init(cfg, 2, 6, per_layer=unrolled), layers=layers, prefill=True)
    cache = KVCache.init(cfg, 3, 6, per_layer=unrolled).with_prefix(pre, group)
    ids, pos, segs = _left_padded(rests, 3, 0, start=[len(starts[j]) for j in group])
    out, cache = model(ids, pos, segs, cache=cache, layers=layers)
    np.testing.assert_allclose(out[:, -1], ref[:, -1], atol=1e-5)
    nxt, at = jnp.asarray([[5], [7], [9]]), jnp.asarray([[len(w)] for w in whole])
    for step in range(2):
        a, ref_cache = model(nxt, at + step, cache=ref_cache, layers=layers)
        b, cache = model(nxt, at + step, cache=cache, layers=layers)
        np.testing.assert_allclose(b, a, atol=1e-5)
    with pytest.raises(ValueError, match="shared prefix"):
        model(ids, pos, segs, cache=cache, layers=layers, prefill=True)
