"""Splash attention (the TPU Pallas kernel in `jax.experimental.pallas.ops.tpu`) for causal
training and prefill: `attention="splash"`.

The kernel takes one batch row as q [H, T, D], k/v [K, T, D] (grouped-query natively: q
head h reads kv head h // (H/K), our head order) and packed documents as segment ids, so
the [B, T, T] boolean mask the other backends read is never built. It is sparse over the
causal mask's blocks (the upper triangle's blocks are skipped, not masked). Under a mesh it
runs inside `shard_map`, batch rows and heads split as the logical rules split the
activations; the kernel is built per shard from the local shapes.

Off TPU the kernel runs in Pallas' interpreter (`interpret=None` picks it): correct and
slow, which is what lets the tests compare it with the XLA attention on CPU. Decoding
against a KV cache keeps the XLA path (`layers.attend_cached`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from findap_jax.parallel.sharding import logical_to_spec

LANES = 128          # the kernel's kv blocks are multiples of the TPU lane width
MAX_BLOCK = 512      # q/kv block of the kernel (MaxText's default sa_block sizes)


class Segments(NamedTuple):
    """A causal mask given by packed-document ids [B, T] (what `attend` gets for splash):
    query i sees key j when j <= i and both carry the same id."""
    ids: jax.Array


def padded_length(t: int) -> int:
    """T rounded up to the lane width, or to a whole number of MAX_BLOCK blocks where that
    adds at most 1/16 (8,000 -> 8,192 runs 512-blocks; 8,064 would force 128-blocks)."""
    lanes = -(-t // LANES) * LANES
    blocks = -(-t // MAX_BLOCK) * MAX_BLOCK
    return blocks if (blocks - t) * 16 <= t else lanes


def _block(t: int) -> int:
    block = min(MAX_BLOCK, t)
    while t % block:
        block //= 2
    return block


def _one_shard(q, k, v, ids, interpret: bool):
    """q [B, H, T, D], k/v [B, K, T, D], ids [B, T] (T a multiple of LANES) -> [B, H, T, D]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    h, t = q.shape[1], q.shape[2]
    b = _block(t)
    sizes = sk.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                          block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    mask = sm.MultiHeadMask([sm.CausalMask((t, t))] * h)
    kernel = sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                interpret=interpret)
    return jax.vmap(lambda q, k, v, s: kernel(q, k, v, sk.SegmentIds(q=s, kv=s)))(q, k, v, ids)


def _specs(q_shape, kv_shape, mesh, rules):
    """shard_map specs: batch as the rules split it, heads only where q and kv heads split
    alike (else a shard's q heads would not find their kv heads), length and head_dim whole."""
    qs = logical_to_spec(("batch", "act_heads", None, None), q_shape, mesh, rules)
    ks = logical_to_spec(("batch", "act_kv_heads", None, None), kv_shape, mesh, rules)
    heads = qs[1] if qs[1] == ks[1] else None
    return P(qs[0], heads, None, None), P(qs[0], None)


def splash_attend(q, k, v, segment_ids, rules=None, interpret: bool | None = None):
    """Causal grouped-query attention of packed documents. q [B,T,H,D], k/v [B,T,K,D],
    segment_ids [B,T] -> [B,T,H,D] in q's dtype. T is padded (`padded_length`; the pad keys
    come after every real query, so causality alone hides them)."""
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    b, t, h, d = q.shape
    if k.shape[1] != t:
        raise ValueError(f"splash attention is causal over one sequence: q has {t} positions, k {k.shape[1]}")
    pad = padded_length(t) - t
    heads_first = lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))).transpose(0, 2, 1, 3)  # noqa: E731
    qh = heads_first(q * jnp.asarray(1.0 / math.sqrt(d), q.dtype))    # the kernel does not scale
    kh, vh = heads_first(k.astype(q.dtype)), heads_first(v.astype(q.dtype))
    ids = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, pad)), constant_values=-1)
    mesh = jax.sharding.get_abstract_mesh()
    fn = lambda q, k, v, s: _one_shard(q, k, v, s, interpret)  # noqa: E731
    if not mesh.empty:
        x_spec, ids_spec = _specs(qh.shape, kh.shape, mesh, rules)
        fn = jax.shard_map(fn, mesh=mesh, in_specs=(x_spec, x_spec, x_spec, ids_spec), out_specs=x_spec,
                           check_vma=False)
    out = fn(qh, kh, vh, ids)
    return out.transpose(0, 2, 1, 3)[:, :t].astype(q.dtype)
