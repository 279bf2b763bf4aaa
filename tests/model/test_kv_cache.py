"""KV-cache decoding equals recomputing the full forward."""
import jax.numpy as jnp
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
