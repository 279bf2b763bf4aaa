"""The Llama decoder: token embedding, a scanned stack of decoder layers, LM head.

Layers are stacked along a leading 'layers' axis and run with `jax.lax.scan`, so compile
time does not grow with depth and remat applies per layer. `model(input_ids)` returns
logits [batch, length, vocab]; packed rows pass `segment_ids` (0 = padding) and
`positions`; decoding passes a `KVCache` and gets `(logits, new_cache)` back.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from findap_jax.model.config import LlamaConfig
from findap_jax.model.layers import DecoderLayer, RMSNorm, param, rope_inv_freq
from findap_jax.parallel.sharding import constrain

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@struct.dataclass
class KVCache:
    """Keys/values of every layer [L, B, S, K, D], which slots hold real tokens [B, S],
    and the next slot to write (shared by the batch: prompts are left-padded)."""
    k: jax.Array
    v: jax.Array
    valid: jax.Array
    index: jax.Array

    @classmethod
    def init(cls, cfg: LlamaConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
        return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))


class Llama(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs | None = None,
                 dtype=jnp.float32, param_dtype=jnp.float32, remat: str = "none", rules=None):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {remat!r}; choose one of {sorted(REMAT_POLICIES)}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.cfg, self.dtype, self.remat, self.rules = cfg, dtype, remat, rules
        self.embed = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), param_dtype)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(r):
            return DecoderLayer(cfg, rngs=r, dtype=dtype, param_dtype=param_dtype, rules=rules)

        self.layers = make_layers(rngs)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs, dtype=dtype,
                                  param_dtype=param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"),
                                 param_dtype)

    def __call__(self, input_ids, positions=None, segment_ids=None, cache: KVCache | None = None):
        """Logits [B, T, V] (float32), or (logits, new cache) when a cache is given."""
        x, new_cache = self.hidden_states(input_ids, positions, segment_ids, cache)
        logits = constrain(self.head(x), ("batch", "length", "act_vocab"), self.rules)
        return logits if cache is None else (logits, new_cache)

    def head(self, x):
        """Output projection of final hidden states [..., E] -> float32 logits [..., V]."""
        head = self.embed[...].T if self.cfg.tie_word_embeddings else self.lm_head[...]
        return jnp.einsum("...e,ev->...v", x, head.astype(self.dtype), preferred_element_type=jnp.float32)

    def hidden_states(self, input_ids, positions=None, segment_ids=None, cache: KVCache | None = None):
        """Final-normed hidden states [B, T, E] and the new cache (None without one); lets a
        caller apply the head to a few positions only (log-likelihood scoring)."""
        cfg, dt = self.cfg, self.dtype
        b, t = input_ids.shape
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        x = jnp.take(self.embed[...], input_ids, axis=0).astype(dt)
        x = constrain(x, ("batch", "length", "act_embed"), self.rules)
        inv_freq = rope_inv_freq(cfg)

        if cache is None:
            idx = jnp.arange(t)
            mask = (idx[None, :, None] >= idx[None, None, :]) & (
                segment_ids[:, :, None] == segment_ids[:, None, :])
            kv_in, cache_index = None, None
        else:
            cache_index = cache.index
            s = cache.valid.shape[1]
            valid = jax.lax.dynamic_update_slice(cache.valid, segment_ids > 0, (0, cache_index))
            q_slot = cache_index + jnp.arange(t)
            mask = (q_slot[None, :, None] >= jnp.arange(s)[None, None, :]) & valid[:, None, :]
            kv_in = (cache.k, cache.v)

        graphdef, layer_state = nnx.split(self.layers)

        def body(h, xs):
            st, kv = xs
            layer = nnx.merge(graphdef, st)
            h, new_kv = layer(h, positions, inv_freq, mask, kv, cache_index)
            return h, (new_kv if kv is not None else None)

        policy = REMAT_POLICIES[self.remat]
        if self.remat != "none":
            body = jax.checkpoint(body, policy=policy, prevent_cse=False)
        x, new_kv = jax.lax.scan(body, x, (layer_state, kv_in))
        x = self.final_norm(x)
        if cache is None:
            return x, None
        return x, KVCache(k=new_kv[0], v=new_kv[1], valid=valid, index=cache_index + t)
