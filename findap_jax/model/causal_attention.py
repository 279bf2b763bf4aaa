"""Causal self-attention by query blocks, with its own backward pass (flash-attention style).

Why: left to autodiff, blocked attention saves each query block's [G*Tb, S] scores and
probabilities and a slice of the keys and values per block, and the layer scan stacks all
of it for every layer (zero-filled [L, ...] buffers, a copy in, a copy out; a SmolLM2-135M
layer's saved tensors at 4 x 512: 93 MB, 54 with this). Here only q, k, v, the output and
one softmax normaliser per query row (its max and log-sum) are saved; the backward pass
recomputes each block's probabilities from them, which costs one more q.k matmul per block
(~1.5% of a SmolLM2 step's FLOPs).

Layout (`grouped`, shared with `layers`): the query groups of a kv head are stacked along the
query axis, so every product is a plain [G*Tb, D] x [D, S] (or its transposes) per (row,
kv head); queries go in blocks of `block` against the keys up to the block's end, which
skips the masked upper triangle.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from findap_jax.model.cpu_layout import bf16_on_cpu, row_major

MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def grouped(x, kv):
    """[B, Tb, H, D] -> [B, kv, G*Tb, D] (the G query heads of a kv head stacked along rows)."""
    b, t, h, d = x.shape
    return x.reshape(b, t, kv, h // kv, d).transpose(0, 2, 3, 1, 4).reshape(b, kv, (h // kv) * t, d)


def ungrouped(x, t):
    """[B, kv, G*Tb, D] -> [B, Tb, H, D]."""
    b, kv, gt, d = x.shape
    return x.reshape(b, kv, gt // t, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, kv * (gt // t), d)


def grouped_mask(mask, g):
    """mask [B, Tb, S] -> [B, 1, G*Tb, S], the rows of `grouped` queries (shared by a kv head's G heads)."""
    b, t = mask.shape[:2]
    return jnp.broadcast_to(mask[:, None, None], (b, 1, g) + mask.shape[1:]).reshape(b, 1, g * t, -1)


def _scores(qh, kh, mask, d):
    """(masked fp32 scores [B, kv, G*Tb, S] of grouped queries against keys [B, kv, S, D],
    the mask broadcast to them); mask [B, Tb, S] is shared by a row's G query heads."""
    s = jnp.einsum("bkqd,bksd->bkqs", qh, kh, preferred_element_type=jnp.float32) / math.sqrt(d)
    m = grouped_mask(mask, qh.shape[2] // mask.shape[1])
    return jnp.where(m, s, MASK_VALUE), m


def attend_grouped(qh, kh, vt, mask):
    """Grouped queries [B, kv, G*Tb, D] against keys [B, kv, S, D] and transposed values
    [B, kv, D, S], mask [B, Tb, S] -> (out [B, kv, G*Tb, D] in the values' dtype, row max,
    log row sum [B, kv, G*Tb, 1]). Probabilities stay unnormalised through the value matmul
    (both operands contract their minor axis); the [G*Tb, D] output is divided by the row
    sums instead of the [G*Tb, S] scores. Differentiable as it is (the max is a constant)."""
    s, _ = _scores(qh, kh, mask, qh.shape[-1])
    top = jax.lax.stop_gradient(s.max(-1, keepdims=True))
    p = jnp.exp(s - top)
    total = p.sum(-1, keepdims=True)
    o = jnp.einsum("bkqs,bkds->bkqd", p.astype(vt.dtype), vt, preferred_element_type=jnp.float32)
    return (o / total).astype(vt.dtype), top, jnp.log(total)


def _spans(t, block):
    return [(start, min(start + block, t)) for start in range(0, t, block)]


def _forward(q, k, v, mask, block):
    """(out [B, T, H, D], per-block (row max, log row sum) [B, kv, G*Tb, 1] each) over the
    query blocks. The two are kept apart: a row that sees no key has max = MASK_VALUE, and
    MASK_VALUE + log(sum) rounds back to MASK_VALUE in fp32, losing the uniform softmax
    the forward pass gave that row."""
    t, kv = q.shape[1], k.shape[2]
    kh, vt = _keys_values(k, v)
    outs, lses = [], []
    for start, end in _spans(t, block):
        o, top, log_total = attend_grouped(grouped(q[:, start:end], kv), kh[:, :, :end], vt[..., :end],
                                           mask[:, start:end, :end])
        outs.append(ungrouped(o, end - start))
        lses.append((top, log_total))
    return jnp.concatenate(outs, axis=1), lses


def _backward(q, k, v, mask, out, lses, dout, block):
    """dq, dk, dv from the saved inputs, output and row statistics: per block, p is rebuilt as
    exp(s - max - log sum), then dv = p^T do, dp = do v^T, ds = p (dp - rowsum(do * out)),
    zero where masked (as autodiff through the mask gives), dq = ds k / sqrt(D),
    dk = ds^T q / sqrt(D); dk and dv accumulate over blocks in fp32."""
    b, t, _, d = q.shape
    kv, dt = k.shape[2], v.dtype
    kh, vt = _keys_values(k, v)
    flip = bf16_on_cpu(dt)   # dk, dv accumulate as [B, kv, D, S] (_kv_grad)
    dk = jnp.zeros(vt.shape if flip else kh.shape, jnp.float32)
    dv = jnp.zeros(dk.shape, jnp.float32)
    dqs = []
    for (start, end), (top, log_total) in zip(_spans(t, block), lses):
        qh, doh = grouped(q[:, start:end], kv), grouped(dout[:, start:end].astype(dt), kv)
        oh = grouped(out[:, start:end], kv)
        s, m = _scores(qh, kh[:, :, :end], mask[:, start:end, :end], d)
        p = jnp.exp(s - top - log_total)
        delta = jnp.sum(doh.astype(jnp.float32) * oh.astype(jnp.float32), -1, keepdims=True)
        dv = _add_prefix(dv, _kv_grad(p.astype(dt), doh, flip), flip)
        dp = jnp.einsum("bkqd,bkds->bkqs", doh, vt[..., :end], preferred_element_type=jnp.float32)
        ds = jnp.where(m, p * (dp - delta) / math.sqrt(d), 0.0).astype(dt)
        dqs.append(ungrouped(jnp.einsum("bkqs,bksd->bkqd", ds, kh[:, :, :end],
                                         preferred_element_type=jnp.float32).astype(q.dtype), end - start))
        dk = _add_prefix(dk, _kv_grad(ds, qh, flip), flip)
    back = (0, 3, 1, 2) if flip else (0, 2, 1, 3)
    return jnp.concatenate(dqs, axis=1), dk.transpose(back).astype(k.dtype), dv.transpose(back).astype(v.dtype)


def _kv_grad(p, x, flip):
    """p^T x over the query axis, p [B, kv, G*Tb, S], x [B, kv, G*Tb, D] -> [B, kv, S, D], or
    with `flip` its transpose [B, kv, D, S] from a row-major x^T: the form XLA:CPU runs as
    a bf16 dot (cpu_layout; 5% of a bf16 SmolLM2 step), where in fp32 it cost 4%."""
    if flip:
        return jnp.einsum("bkdq,bkqs->bkds", row_major(x.swapaxes(2, 3)), p, preferred_element_type=jnp.float32)
    return jnp.einsum("bkqs,bkqd->bksd", p, x, preferred_element_type=jnp.float32)


def _keys_values(k, v):
    """k [B, T, kv, D], v [B, T, kv, D] -> keys [B, kv, T, D] and transposed values
    [B, kv, D, T], written out row-major where bf16 matmuls need it (cpu_layout)."""
    kh, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1)
    return (row_major(kh), row_major(vt)) if bf16_on_cpu(v.dtype) else (kh, vt)


def _add_prefix(acc, x, keys_last: bool = False):
    """acc[:, :, :n] += x (n = x's key length; the last axis with `keys_last`), as a slice
    and an in-place update, not a scatter."""
    head = acc[..., :x.shape[-1]] if keys_last else acc[:, :, :x.shape[2]]
    return jax.lax.dynamic_update_slice(acc, head + x, (0,) * acc.ndim)


def _rows(fn, per_row, *arrays):
    """fn over the whole batch, or one batch row at a time in a `lax.map` (a row's scores
    then stay in cache on a single CPU device)."""
    if not per_row or arrays[0].shape[0] == 1:
        return fn(*arrays)
    res = jax.lax.map(lambda xs: fn(*jax.tree.map(lambda a: a[None], xs)), arrays)
    return jax.tree.map(lambda x: x[:, 0], res)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def causal_attend(q, k, v, mask, block: int = 128, per_row: bool = False):
    """Causal grouped-query self-attention. q [B,T,H,D], k/v [B,T,K,D], mask [B,T,T] bool
    (causal, and packed documents / padding); query i must see no key j > i. A row that
    sees no key gets the mean of the values up to its block's end (the model's masks
    always include the diagonal, so none does there)."""
    return _rows(lambda *a: _forward(*a, block)[0], per_row, q, k, v, mask)


def _causal_attend_fwd(q, k, v, mask, block, per_row):
    out, lses = _rows(lambda *a: _forward(*a, block), per_row, q, k, v, mask)
    return out, (q, k, v, mask, out, lses)


def _causal_attend_bwd(block, per_row, res, dout):
    q, k, v, mask, out, lses = res
    dq, dk, dv = _rows(lambda q, k, v, m, o, d, ls: _backward(q, k, v, m, o, ls, d, block),
                       per_row, q, k, v, mask, out, dout, lses)
    return dq, dk, dv, None


causal_attend.defvjp(_causal_attend_fwd, _causal_attend_bwd)
