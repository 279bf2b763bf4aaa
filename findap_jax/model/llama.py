"""The Llama decoder: token embedding, a scanned stack of decoder layers, LM head.

Layers are stacked along a leading 'layers' axis and run with `jax.lax.scan`, so compile
time does not grow with depth and remat applies per layer. `model(input_ids)` returns
logits [batch, length, vocab]; packed rows pass `segment_ids` (0 = padding) and
`positions`; decoding passes a `KVCache` and gets `(logits, new_cache)` back. Rows that
hold a prompt once and two answers after it (prompt-shared preference pairs,
`train.shared_prompt`) pass `branch_ids` as well.

Decoding on CPU is bound by reading the weights once per token, and slicing layer i out
of the stacked weights inside a scan copies it first; `unstack_layers()` gives per-layer
weight buffers that `hidden_states(..., layers=...)` runs in an unrolled loop instead
(with a per-layer cache), which reads each weight exactly once.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx, struct

from findap_jax.model.config import LlamaConfig
from findap_jax.model.layers import (ATTENTION_IMPLS, RESIDUAL_DTYPE, DecoderLayer, RMSNorm, cache_slots,
                                     cache_write, matmul, param, rope_inv_freq, rope_tables)
from findap_jax.model.splash import Segments
from findap_jax.parallel.sharding import constrain


def project_head(w, x, transpose: bool, dtype, w_cast=None):
    """x [..., E] in `dtype` times the head weight (tied embedding [V, E] used as is, no
    transposed copy, when `transpose`) -> float32 logits [..., V]. `w_cast`: w already in
    `dtype` (`Llama.head_cast`), for callers that apply the head chunk by chunk."""
    return matmul(x.astype(dtype), w, transpose, jnp.float32, w_cast)


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@struct.dataclass
class KVCache:
    """Keys [B, K, D, S] and values [B, K, S, D] of every layer (the layouts decode reads
    in place, see `layers.attend_cached`) — stacked along a leading [L] axis for the
    scanned stack, or tuples of L arrays for the unrolled one (`per_layer=True`) —
    which slots hold real tokens [B, S], and the next slot to write (shared by the batch:
    prompts are left-padded).

    Optionally a shared prefix read beside it (`with_prefix`): g prompt starts stored once,
    keys [K, D, g*P] and values [K, g*P, D] per layer (stacked or tuples, as k/v), which
    of their slots are real [g, P], and which start each row continues [B]."""
    k: jax.Array | tuple
    v: jax.Array | tuple
    valid: jax.Array
    index: jax.Array
    prefix_k: jax.Array | tuple | None = None
    prefix_v: jax.Array | tuple | None = None
    prefix_valid: jax.Array | None = None
    prefix_group: jax.Array | None = None

    @classmethod
    def init(cls, cfg: LlamaConfig, batch: int, max_len: int, dtype=jnp.float32,
             per_layer: bool = False) -> "KVCache":
        k_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_len)
        v_shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        if per_layer:
            k = tuple(jnp.zeros(k_shape, dtype) for _ in range(cfg.num_layers))
            v = tuple(jnp.zeros(v_shape, dtype) for _ in range(cfg.num_layers))
        else:
            k = jnp.zeros((cfg.num_layers,) + k_shape, dtype)
            v = jnp.zeros((cfg.num_layers,) + v_shape, dtype)
        return cls(k=k, v=v, valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))

    def with_prefix(self, starts: "KVCache", group) -> "KVCache":
        """This (empty) cache reading `starts` — a filled cache of g prompt starts — as a shared
        prefix, row b continuing start group[b]; its positions go on from each start's."""
        def keys(x):     # [..., g, K, D, P] -> [..., K, D, g*P]
            x = jnp.moveaxis(x, -4, -2)
            return x.reshape(x.shape[:-2] + (-1,))

        def values(x):   # [..., g, K, P, D] -> [..., K, g*P, D]
            x = jnp.moveaxis(x, -4, -3)
            return x.reshape(x.shape[:-3] + (-1, x.shape[-1]))
        per_layer = isinstance(starts.k, tuple)
        pk = tuple(map(keys, starts.k)) if per_layer else keys(starts.k)
        pv = tuple(map(values, starts.v)) if per_layer else values(starts.v)
        return self.replace(prefix_k=pk, prefix_v=pv, prefix_valid=starts.valid,
                            prefix_group=jnp.asarray(group, jnp.int32))


class Llama(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs | None = None,
                 dtype=jnp.float32, param_dtype=jnp.float32, remat: str = "none", rules=None,
                 attention: str = "xla"):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {remat!r}; choose one of {sorted(REMAT_POLICIES)}")
        if attention not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention {attention!r}; choose one of {ATTENTION_IMPLS}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.cfg, self.dtype, self.remat, self.rules, self.attention = cfg, dtype, remat, rules, attention
        self.embed = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), param_dtype)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(r):
            return DecoderLayer(cfg, rngs=r, dtype=dtype, param_dtype=param_dtype, rules=rules,
                                attention=attention)

        self.layers = make_layers(rngs)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, rngs=rngs, dtype=dtype,
                                  param_dtype=param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"),
                                 param_dtype)

    def __call__(self, input_ids, positions=None, segment_ids=None, cache: KVCache | None = None,
                 layers=None, prefill: bool = False):
        """Logits [B, T, V] (float32), or (logits, new cache) when a cache is given."""
        x, new_cache = self.hidden_states(input_ids, positions, segment_ids, cache, layers, prefill)
        logits = constrain(self.head(x), ("batch", "length", "act_vocab"), self.rules)
        return logits if cache is None else (logits, new_cache)

    def head(self, x):
        """Output projection of final hidden states [..., E] -> float32 logits [..., V]."""
        return self.head_fn()(self.head_weight(), x)

    def head_weight(self) -> jax.Array:
        """The output projection's weight: the embedding [V, E] when tied, else lm_head [E, V]."""
        return self.embed[...] if self.cfg.tie_word_embeddings else self.lm_head[...]

    def head_fn(self):
        """The head as a pure function (weight, x, weight_cast=None) -> fp32 logits, holding
        no parameters, for code that differentiates the weight itself (losses.head_chunk_stats)."""
        return functools.partial(project_head, transpose=self.cfg.tie_word_embeddings, dtype=self.dtype)

    def head_cast(self, w):
        """The head weight w in the compute dtype, or None where it already is: the head
        chunks share one cast instead of casting the [V, E] weight once per chunk."""
        return None if w.dtype == jnp.dtype(self.dtype) else w.astype(self.dtype)

    def unstack_layers(self) -> list:
        """Per-layer weight states (copies) for `hidden_states(..., layers=...)`."""
        stacked = nnx.state(self.layers)
        return [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(self.cfg.num_layers)]

    def hidden_states(self, input_ids, positions=None, segment_ids=None, cache: KVCache | None = None,
                      layers=None, prefill: bool = False, branch_ids=None):
        """Final-normed hidden states [B, T, E] and the new cache (None without one); lets a
        caller apply the head to a few positions only (log-likelihood scoring). `layers`
        (from `unstack_layers`) runs the layers unrolled on those buffers; a cache must
        then be `per_layer`. `prefill=True` promises the cache is empty: attention then
        spans the new tokens only (not the whole cache length) and their keys/values are
        written to the cache. `branch_ids` [B, T] (no cache): a token of branch n > 0 does
        not see the earlier tokens of other branches, only branch 0's and its own, so a row
        [prompt | answer 1 | answer 2] computes each answer as if it followed the prompt alone."""
        cfg, dt = self.cfg, self.dtype
        b, t = input_ids.shape
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        if positions is None:   # with a cache, the tokens go on from what it holds
            start = 0 if cache is None else cache.index
            positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        x = jnp.take(self.embed[...], input_ids, axis=0).astype(RESIDUAL_DTYPE)
        x = constrain(x, ("batch", "length", "act_embed"), self.rules)
        rope = rope_tables(positions, rope_inv_freq(cfg))

        causal = cache is None or prefill
        if branch_ids is not None and (cache is not None or self.attention == "splash"):
            raise ValueError("branch_ids (prompt-shared preference rows) take a forward pass without a cache "
                             "and a mask-based attention; splash builds its own mask: set "
                             "train.shared_prompt=false with model.attention=splash")
        prefix = None
        if cache is not None and cache.prefix_k is not None:
            if prefill:
                raise ValueError("prefill=True promises an empty cache; this one reads a shared prefix")
            prefix = (cache.prefix_k, cache.prefix_v, cache.prefix_valid, cache.prefix_group)
        if causal:
            if self.attention == "splash":   # the kernel builds its block-sparse causal mask itself
                mask = Segments(segment_ids)
            else:
                idx = jnp.arange(t)
                mask = (idx[None, :, None] >= idx[None, None, :]) & (
                    segment_ids[:, :, None] == segment_ids[:, None, :])
                if branch_ids is not None:
                    mask &= (branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :])
            kv_in, cache_index = None, None
        if cache is not None:
            cache_index = cache.index
            s = cache.valid.shape[1]
            valid = jax.lax.dynamic_update_slice(cache.valid, segment_ids > 0, (0, cache_index))
            if not prefill:
                q_slot = cache_index + jnp.arange(t)
                mask = (q_slot[None, :, None] >= jnp.arange(s)[None, None, :]) & valid[:, None, :]
            kv_in = (cache.k, cache.v)

        graphdef, layer_state = nnx.split(self.layers)
        if layers is not None:
            x, new_kv = self._unrolled(graphdef, layers, x, rope, mask, kv_in, cache_index,
                                       prefill, causal, prefix)
        else:
            x, new_kv = self._scanned(graphdef, layer_state, x, rope, mask, kv_in,
                                      cache_index, prefill, causal, prefix)
        x = self.final_norm(x)
        if cache is None:
            return x, None
        return x, cache.replace(k=new_kv[0], v=new_kv[1], valid=valid, index=cache_index + t)

    def _scanned(self, graphdef, layer_state, x, rope, mask, kv_in, cache_index, prefill,
                 causal, prefix=None):
        """Layers under `lax.scan`; the cache rides in the carry and only the new slots are
        written (no per-step copy of the whole cache through the scan's outputs)."""
        if kv_in is None:
            def body(h, st):
                h, _ = nnx.merge(graphdef, st)(h, rope, mask, causal=causal)
                return h, None
            if self.remat != "none":
                body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
            return jax.lax.scan(body, x, layer_state, unroll=self._unroll())[0], None
        t = x.shape[1]

        def body_kv(carry, xs):
            h, ks, vs = carry
            st, i = xs
            if prefill:   # attend over the new tokens; their k/v are what gets written
                h, (k_new, v_new) = nnx.merge(graphdef, st)(h, rope, mask, causal=causal)
            else:
                kv = (jax.lax.dynamic_index_in_dim(ks, i, keepdims=False),
                      jax.lax.dynamic_index_in_dim(vs, i, keepdims=False))
                pre = None if prefix is None else (
                    jax.lax.dynamic_index_in_dim(prefix[0], i, keepdims=False),
                    jax.lax.dynamic_index_in_dim(prefix[1], i, keepdims=False)) + prefix[2:]
                h, (k, v) = nnx.merge(graphdef, st)(h, rope, mask, kv, cache_index, prefix=pre)
                k_new, v_new = cache_slots(k, cache_index, t, keys=True), cache_slots(v, cache_index, t, keys=False)
            ks = cache_write(ks, k_new, cache_index, keys=True, layer=i)
            vs = cache_write(vs, v_new, cache_index, keys=False, layer=i)
            return (h, ks, vs), None

        idx = jnp.arange(self.cfg.num_layers, dtype=jnp.int32)
        (x, ks, vs), _ = jax.lax.scan(body_kv, (x, kv_in[0], kv_in[1]), (layer_state, idx))
        return x, (ks, vs)

    def _unroll(self) -> int:
        """Scan unrolling of the layer stack without a cache (training, scoring): all layers
        for bf16 (or other sub-fp32) compute on CPU. A scan stacks each layer's saved
        activations into [L, ...] buffers, and XLA:CPU writes a bf16 buffer by converting the
        whole stack to fp32 and back on every layer (most of a bf16 SmolLM2 step when
        profiled). fp32 keeps the scan: unrolled it gained ~6% but peaked 3.4 GB higher
        (SFT on 8 virtual devices). Accelerators keep the scan."""
        cpu_low_precision = jax.default_backend() == "cpu" and jnp.dtype(self.dtype) != jnp.float32
        return self.cfg.num_layers if cpu_low_precision else 1

    def _unrolled(self, graphdef, layers, x, rope, mask, kv_in, cache_index, prefill, causal,
                  prefix=None):
        """Layers in a Python loop over per-layer weight buffers (decoding on CPU)."""
        if len(layers) != self.cfg.num_layers:
            raise ValueError(f"got {len(layers)} layer states for {self.cfg.num_layers} layers")
        if kv_in is not None and not isinstance(kv_in[0], (tuple, list)):
            raise ValueError("unrolled layers need a per-layer KVCache (KVCache.init(..., per_layer=True))")
        ks, vs = [], []
        for i, st in enumerate(layers):
            kv = None if kv_in is None or prefill else (kv_in[0][i], kv_in[1][i])
            pre = None if prefix is None else (prefix[0][i], prefix[1][i]) + prefix[2:]
            x, (k, v) = nnx.merge(graphdef, st)(x, rope, mask, kv, cache_index, causal, pre)
            if prefill:
                k = cache_write(kv_in[0][i], k, cache_index, keys=True)
                v = cache_write(kv_in[1][i], v, cache_index, keys=False)
            ks.append(k)
            vs.append(v)
        return x, (None if kv_in is None else (tuple(ks), tuple(vs)))
