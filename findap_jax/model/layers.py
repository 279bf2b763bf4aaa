"""Llama building blocks in Flax NNX: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Parameters carry logical axis names (metadata `out_sharding`); activations are constrained
by logical names through `findap_jax.parallel.constrain`. Compute runs in `dtype`, weights
are stored in `param_dtype` (fp32 master weights with bf16 compute is the usual pairing).
"""
from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from findap_jax.model.causal_attention import MASK_VALUE as _MASK_VALUE
from findap_jax.model.causal_attention import attend_grouped, causal_attend, grouped, grouped_mask, ungrouped
from findap_jax.model.config import LlamaConfig
from findap_jax.model.cpu_layout import bf16_on_cpu, row_major
from findap_jax.model.splash import Segments, splash_attend
from findap_jax.parallel.sharding import constrain


def param(rngs: nnx.Rngs, shape, axes, param_dtype, std: float | None = 0.02) -> nnx.Param:
    """A parameter with logical axes; std=None means ones (norm scales)."""
    if std is None:
        value = jnp.ones(shape, param_dtype)
    else:
        value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(param_dtype)
    return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs, dtype, param_dtype):
        self.scale = param(rngs, (dim,), ("norm",), param_dtype, std=None)
        self.eps, self.dtype = eps, dtype

    def __call__(self, x):
        return rms_norm(x, self.scale[...], self.eps, self.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x, scale, eps: float, dtype):
    """scale * x / rms(x), the statistics in fp32, the output in `dtype`.

    Written with its own backward so that the layer scan saves only x and the [.., 1]
    reciprocal rms per norm; left to autodiff it also stacks the normalised x, the
    broadcast scale and the mean square for every layer (each [L, B, T, E] buffer is
    zero-filled, written and sliced again: memory traffic, no FLOPs)."""
    return _rms_norm_fwd(x, scale, eps, dtype)[0]


def _rms_norm_fwd(x, scale, eps, dtype):
    x32 = x.astype(jnp.float32)
    r = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(dtype) * (x32 * r).astype(dtype), (x, r, scale)


def _rms_norm_bwd(eps, dtype, res, g):
    x, r, scale = res
    xhat = x.astype(jnp.float32) * r
    g32 = g.astype(jnp.float32)
    dscale = jnp.sum((g32 * xhat).reshape(-1, xhat.shape[-1]), axis=0)
    dxhat = g32 * scale.astype(dtype).astype(jnp.float32)
    dx = r * (dxhat - xhat * jnp.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx.astype(x.dtype), dscale.astype(scale.dtype)


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


@jax.custom_vjp
def swiglu(g, u):
    """silu(g) * u, saving only g and u for the backward pass (autodiff of the plain
    expression also stacks sigmoid(g), silu(g) and a product per layer: four [B, T, F]
    buffers where two do)."""
    return _swiglu_fwd(g, u)[0]


def _swiglu_fwd(g, u):
    return jax.nn.silu(g) * u, (g, u)


def _swiglu_bwd(res, dh):
    g, u = res
    g32, u32, dh32 = g.astype(jnp.float32), u.astype(jnp.float32), dh.astype(jnp.float32)
    s = jax.nn.sigmoid(g32)
    silu = g32 * s
    dg = dh32 * u32 * s * (1.0 + g32 * (1.0 - s))
    return dg.astype(g.dtype), (dh32 * silu).astype(u.dtype)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies, with Llama-3.1 "llama3" scaling when configured (fp32, as HF)."""
    dim = cfg.head_dim
    inv = 1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    inv = inv.astype(np.float32)
    rs = cfg.rope_scaling
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor = rs["factor"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        old_ctx = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def rope_tables(positions, inv_freq):
    """(cos, sin) [B, T, 1, D/2] in fp32 of each position's RoPE angles, computed once per
    forward pass and shared by every layer's queries and keys.

    On CPU they come out of a conditional (whose predicate always holds) so that they are
    materialised: XLA:CPU otherwise fuses the cos and sin into every rotation that reads
    them and evaluates them there once per head and element (60 rotations per SmolLM2
    forward; with an optimization barrier around the tables, the compiled rotations still
    held them). That recomputation was ~4% of a bf16 train step at 4 x 512 (A/B: 0.959x
    the step time), nothing measurable in fp32."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)

    def tables(f):
        return jnp.cos(f)[:, :, None, :], jnp.sin(f)[:, :, None, :]
    if jax.default_backend() != "cpu":
        return tables(freqs)
    holds = jnp.min(positions, initial=0) > jnp.iinfo(jnp.int32).min
    return jax.lax.cond(holds, tables, lambda f: tables(f), freqs)


def apply_rope(x, rope):
    """Rotate-half RoPE (HF layout) in fp32: x [B, T, H, D], rope = rope_tables(...)."""
    cos, sin = rope
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul(x, w, transpose_w: bool = False, out_dtype=None, w_cast=None):
    """x [..., K] @ w [K, N] (or w [N, K] with `transpose_w`: the tied LM head) -> [..., N],
    computed in x's dtype with fp32 accumulation; w may be stored wider (fp32 master
    weights with bf16 compute): it is cast inside, and its gradient comes back in its own
    dtype without a round trip through the compute dtype. `w_cast`, w already cast to x's
    dtype by the caller, replaces that cast (and gets no gradient): a loop that applies one
    weight many times inside conditionals (the LM head's chunks) casts it once outside,
    where XLA cannot hoist it by itself. w may have more dims whose
    row-major flattening is [K, N] ([E, heads, D] or [heads, D, E]); it is flattened here,
    so the saved residual is the weight itself, which the layer scan reads in place rather
    than stacking a reshaped copy of every layer's weights.

    The backward pass is written out as two plain 2-D matmuls. Left to autodiff, XLA:CPU
    emits each weight gradient as a transposed copy fused into the elementwise producer
    of the incoming gradient (a strided loop, 27% of a SmolLM2 train step when profiled),
    then the matmul; written this way both operands are used in the layout they have."""
    return _matmul_fwd(x, w, transpose_w, out_dtype, w_cast)[0]


def _dot(a, b, contract, out_dtype):
    return jax.lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=out_dtype)


def _as_2d(w, k, transpose_w):
    return w.reshape(-1, k) if transpose_w else w.reshape(k, -1)


def _compute_weight(w, w_cast, x):
    """w in x's dtype: the caller's cast when given (checked to be one), else cast here."""
    if w_cast is None:
        return w.astype(x.dtype)
    if w_cast.shape != w.shape or w_cast.dtype != x.dtype:
        raise ValueError(f"w_cast {w_cast.dtype}{list(w_cast.shape)} is not w {list(w.shape)} in x's dtype {x.dtype}")
    return w_cast


def _matmul_fwd(x, w, transpose_w, out_dtype, w_cast):
    # fp32 accumulation, always: XLA:CPU runs a bf16 x bf16 -> fp32 dot natively (AVX-512
    # BF16) but upcasts a bf16 -> bf16 dot to a full fp32 one.
    x2 = x.reshape(-1, x.shape[-1])
    w2 = _as_2d(_compute_weight(w, w_cast, x), x.shape[-1], transpose_w)
    y = _dot(x2, w2, ((1,), (1 if transpose_w else 0,)), jnp.float32)
    y = y.astype(out_dtype or x.dtype)
    return y.reshape(x.shape[:-1] + y.shape[-1:]), (x, w, w_cast)


def _matmul_bwd(transpose_w, out_dtype, res, g):
    x, w, w_cast = res
    x2 = x.reshape(-1, x.shape[-1])
    w2 = _as_2d(_compute_weight(w, w_cast, x), x.shape[-1], transpose_w)
    g2 = g.reshape(-1, g.shape[-1]).astype(x.dtype)
    gx = _dot(g2, w2, ((1,), (0 if transpose_w else 1,)), jnp.float32).astype(x.dtype)
    lhs, rhs = (g2, x2) if transpose_w else (x2, g2)        # gw: [N, K] or [K, N]
    if bf16_on_cpu(x.dtype):   # contract the lhs's last axis, row-major (cpu_layout)
        gw = _dot(row_major(lhs.T), rhs, ((1,), (0,)), jnp.float32)
    else:
        gw = _dot(lhs, rhs, ((0,), (0,)), jnp.float32)
    gw = gw.astype(w.dtype)
    return gx.reshape(x.shape), gw.reshape(w.shape), None


matmul.defvjp(_matmul_fwd, _matmul_bwd)

ATTENTION_IMPLS = ("xla", "reference", "dot_product_attention", "splash")
# The residual stream between layers stays fp32 whatever the compute dtype (as under torch
# autocast): the layers' output projections write fp32 straight from their fp32
# accumulators, the residual adds run in fp32, and each norm reads fp32 and writes the
# compute dtype for the next matmuls.
RESIDUAL_DTYPE = jnp.float32


def attend_reference(q, k, v, mask):
    """Grouped-query attention, the textbook way (the tests' reference).
    q [B,T,H,D], k/v [B,S,K,D], mask [B,T,S] bool."""
    b, t, h, d = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(d)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def _attend_block(q, k, v, mask):
    """q [B,T,H,D] against k/v [B,S,K,D] with the query groups of a kv head stacked
    along the query axis: every score is a plain [G*T, S] matmul per (batch, kv head)
    (`causal_attention.attend_grouped`)."""
    out, _, _ = attend_grouped(grouped(q, k.shape[2]), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1), mask)
    return ungrouped(out, q.shape[1])


def _cudnn_applies(dtype, t: int, s: int) -> bool:
    """cuDNN's fused attention runs on GPUs, in bf16/fp16 only, and (with a bias, as the mask
    becomes) trains only on even query and key lengths: jax checks that in its forward rule,
    which under a layer scan is traced after this function returns, past the fallback."""
    return (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
            and t % 2 == 0 and s % 2 == 0)


def fused_dot_product_attention(q, k, v, mask, is_causal: bool):
    """`jax.nn.dot_product_attention`, on cuDNN's fused (flash) kernel where it applies.
    Why not jax's default: with `implementation=None` jax runs its XLA form, which builds the
    [B, H, T, S] scores, so cuDNN must be asked for by name. The boolean mask reaches cuDNN as
    an additive bias; `is_causal` lets it skip the upper triangle. Where cuDNN refuses the
    call (its dtype, head size or version checks), the XLA form runs, with a warning. jax's
    cuDNN partitioner refuses, when it compiles and so past this fallback, q, k and v sharded
    differently (kv heads that do not divide the `tensor` axis) or along the sequence: use
    `xla` attention there."""
    kw = dict(mask=mask[:, None], is_causal=is_causal)
    if _cudnn_applies(q.dtype, q.shape[1], k.shape[1]):
        try:
            return jax.nn.dot_product_attention(q, k, v, implementation="cudnn", **kw)
        except (NotImplementedError, ValueError, RuntimeError) as e:
            logging.getLogger(__name__).warning("cuDNN attention does not apply (%s); using XLA's", e)
    return jax.nn.dot_product_attention(q, k, v, **kw)


def rows_one_at_a_time() -> bool:
    """Causal attention one batch row at a time (a loop on the device): on a single CPU
    device each row's scores then stay in cache, 1.6x faster for a 16 x 1,024 prefill
    (forward) and ~15% for a 4 x 512 train step's attention. Accelerators, and CPU meshes
    (whose batch axis is sharded), keep the batched form."""
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def attend(q, k, v, mask, causal: bool = False, block: int = 128, impl: str = "xla",
           per_row: bool | None = None, rules=None):
    """Grouped-query attention. q [B,T,H,D], k/v [B,S,K,D], mask [B,T,S] bool.

    `causal` promises that query i only sees keys j <= i (training, prefill): queries
    then go in blocks of `block` against the keys up to the block's end, which skips the
    masked upper triangle (~40% of the work at T=512) and keeps each block's scores in
    cache; its backward pass saves no scores (`causal_attention.causal_attend`). `per_row`
    (None: `rows_one_at_a_time()`) runs causal rows in a `lax.map`.
    `impl`: "xla" (this), "reference" (attend_reference), "dot_product_attention"
    (`fused_dot_product_attention`: cuDNN flash attention on GPU in bf16/fp16), "splash"
    (the TPU Pallas kernel, `model.splash`; mask = `Segments`, causal, sharded by `rules`)."""
    if impl == "splash" or isinstance(mask, Segments):
        if impl != "splash" or not causal or not isinstance(mask, Segments):
            raise ValueError("splash attention is causal training/prefill attention over packed documents: "
                             "it takes mask=Segments(segment_ids) with causal=True, and only it takes Segments")
        return splash_attend(q, k, v, mask.ids, rules=rules)
    if impl == "reference":
        return attend_reference(q, k, v, mask)
    if impl == "dot_product_attention":
        return fused_dot_product_attention(q, k, v, mask, causal and q.shape[1] == k.shape[1])
    if impl != "xla":
        raise ValueError(f"unknown attention impl {impl!r}; choose one of {ATTENTION_IMPLS}")
    if not causal or k.shape[1] != q.shape[1]:
        return _attend_block(q, k, v, mask)
    if per_row is None:
        per_row = rows_one_at_a_time()
    return causal_attend(q, k, v, mask, block, per_row and q.shape[1] > block)   # one block: batched


def to_cache_layout(k, v):
    """New keys and values [B, T, K, D] -> the KV cache's layouts: keys [B, K, D, T],
    values [B, K, T, D] (see `attend_cached`)."""
    return k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)


def _slot_start(keys: bool, index, layer=None) -> tuple:
    start = (0, 0, 0, index) if keys else (0, 0, index, 0)
    return start if layer is None else (layer,) + start


def cache_write(buf, new, index, keys: bool, layer=None):
    """`new` keys (keys=True) or values in the cache layout, written from slot `index` of
    a per-layer cache buffer, or of layer `layer` of a stacked [L, ...] one."""
    if layer is not None:
        new = new[None]
    return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), _slot_start(keys, index, layer))


def cache_slots(buf, index, t: int, keys: bool):
    """Slots index..index+t of a per-layer cache buffer (what a step wrote)."""
    size = buf.shape[:3] + (t,) if keys else buf.shape[:2] + (t, buf.shape[3])
    return jax.lax.dynamic_slice(buf, _slot_start(keys, index), size)


def attend_cached(q, k, v, mask, impl: str = "xla", prefix=None):
    """q [B,T,H,D] against a KV cache, keys [B,K,D,S] and values [B,K,S,D], mask [B,T,S]
    (decode, extend), and optionally a shared prefix (`prefix_parts`).

    Both layouts make each (row, kv head) matmul a plain [G*T, D] x [D, S] and
    [G*T, S] x [S, D] product over the cache as stored. Decoding 16 rows against 1,088
    slots on CPU, the whole cache transposed into `_attend_block`'s operand layouts on
    every step made the attention 3.5x slower, and keys stored [S, D] (a transposed
    product) 1.5x slower than [D, S].

    `prefix` = (keys [K, D, g*P], values [K, g*P, D], valid [g, P], group [B]): g shared
    prompt starts, stored once, row b reading start group[b]. The softmax spans the
    prefix's and the row's own slots (one max, one sum)."""
    b, t, h, d = q.shape
    kv = k.shape[1]
    if impl not in ("xla", "splash"):   # each row's view: its own start's slots, then the cache's
        keys, vals, masks = [k], [v], [mask]
        if prefix is not None:
            valid, group = prefix[2], prefix[3]
            for part, rows in zip((keys, vals), _rows_of(prefix, b)):
                part.insert(0, rows)
            masks.insert(0, jnp.broadcast_to(valid[group][:, None], (b, t, valid.shape[1])))
        return attend(q, jnp.concatenate(keys, -1).transpose(0, 3, 1, 2),
                      jnp.concatenate(vals, 2).transpose(0, 2, 1, 3), jnp.concatenate(masks, -1), impl=impl)
    g = h // kv
    qh = grouped(q, kv)
    scores = jnp.where(grouped_mask(mask, g), _scores(qh, k, d), _MASK_VALUE)
    top = scores.max(-1, keepdims=True)
    if prefix is not None:
        pk, pv, pm = prefix_parts(prefix, t, b)
        dense = pk.ndim == 3
        if dense:   # [kv, b*G*T, g*P]: all rows' queries of a kv head against every start
            pre = _scores(qh.transpose(1, 0, 2, 3).reshape(kv, b * g * t, d), pk, d)
            pre = jnp.where(jnp.repeat(pm, g * t, axis=0)[None], pre, _MASK_VALUE)
        else:
            pre = jnp.where(pm[:, None, None, :], _scores(qh, pk, d), _MASK_VALUE)
        top_pre = pre.max(-1, keepdims=True)
        top = jnp.maximum(top, _rows_major(top_pre, b) if dense else top_pre)
    p = jnp.exp(scores - top)
    out = jnp.einsum("bkqs,bksd->bkqd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    total = p.sum(-1, keepdims=True)
    if prefix is not None:
        p = jnp.exp(pre - (top.transpose(1, 0, 2, 3).reshape(kv, b * g * t, 1) if dense else top))
        spec = "kms,ksd->kmd" if dense else "bkqs,bksd->bkqd"
        out_pre = jnp.einsum(spec, p.astype(pv.dtype), pv, preferred_element_type=jnp.float32)
        out = out + (_rows_major(out_pre, b) if dense else out_pre)
        total = total + (_rows_major(p.sum(-1, keepdims=True), b) if dense else p.sum(-1, keepdims=True))
    return ungrouped((out / total).astype(v.dtype), t)


def _scores(q, keys, d):
    """q [..., M, D] x keys [..., D, S] / sqrt(D), fp32, over matching leading axes."""
    return jnp.einsum("...md,...ds->...ms", q, keys, preferred_element_type=jnp.float32) / math.sqrt(d)


def _rows_major(x, b):
    """[kv, b*M', X] -> [b, kv, M', X]."""
    return x.reshape((x.shape[0], b, -1) + x.shape[2:]).transpose(1, 0, 2, 3)


def _rows_of(prefix, b):
    """Each row's own start: keys [B,K,D,P], values [B,K,P,D]."""
    pk, pv, valid, group = prefix
    g, plen = valid.shape
    kv, d = pk.shape[:2]
    return (pk.reshape(kv, d, g, plen)[:, :, group].transpose(2, 0, 1, 3),
            pv.reshape(kv, g, plen, d)[:, group].transpose(1, 0, 2, 3))


def prefix_parts(prefix, t: int, b: int):
    """(keys, values, mask [B, slots]) to attend a shared prefix with. One query per
    row (decode): every row against all g starts at once, a few dense [B*G, D] x [D, g*P]
    matmuls (rows mask out the starts not theirs); longer queries (extend) against their
    own start's rows, gathered."""
    pk, pv, valid, group = prefix
    g, plen = valid.shape
    if t == 1:
        owner = jnp.repeat(jnp.arange(g), plen)
        return pk, pv, (group[:, None] == owner[None]) & valid.reshape(-1)[None]
    keys, vals = _rows_of(prefix, b)
    return keys, vals, valid[group]


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype, param_dtype, rules=None,
                 attention: str = "xla"):
        e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = param(rngs, (e, h, d), ("embed", "heads", "head_dim"), param_dtype)
        self.k_proj = param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.v_proj = param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.o_proj = param(rngs, (h, d, e), ("heads", "head_dim", "embed"), param_dtype)
        self.dtype, self.rules, self.attention = dtype, rules, attention

    def _project(self, x, w):
        """x [B,T,E] through w [E, heads, D] -> [B, T, heads, D]."""
        _, n, d = w.shape
        return matmul(x, w[...]).reshape(x.shape[:2] + (n, d))

    def project(self, x):
        """The (q, k, v) projections of the normed input x [B, T, E]."""
        return self._project(x, self.q_proj), self._project(x, self.k_proj), self._project(x, self.v_proj)

    def __call__(self, qkv, rope, mask, kv_cache=None, cache_index=None, causal=False, prefix=None):
        """From `project`'s (q, k, v) and the `rope_tables`, returns (out, (k, v)), k/v in the cache layouts
        (`to_cache_layout`); with kv_cache=(k, v) the new keys are written at cache_index and
        the whole cache comes back. `causal`: the mask is causal over these tokens alone (no
        cache is read). `prefix`: a shared prefix read beside the cache (see `attend_cached`)."""
        dt = self.dtype
        q, k, v = qkv
        q = constrain(q, ("batch", "length", "act_heads", "head_dim"), self.rules)
        k = constrain(k, ("batch", "length", "act_kv_heads", "head_dim"), self.rules)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if kv_cache is not None:
            ck, cv = kv_cache
            k, v = to_cache_layout(k, v)
            k, v = cache_write(ck, k, cache_index, keys=True), cache_write(cv, v, cache_index, keys=False)
            out = attend_cached(q, k.astype(dt), v.astype(dt), mask, impl=self.attention, prefix=prefix)
        else:
            if prefix is not None:
                raise ValueError("a shared prefix is read beside a KV cache; none was given")
            out = attend(q, k.astype(dt), v.astype(dt), mask, causal=causal, impl=self.attention, rules=self.rules)
            k, v = to_cache_layout(k, v)
        out = constrain(out, ("batch", "length", "act_heads", "head_dim"), self.rules)
        h, d, _ = self.o_proj.shape
        y = matmul(out.reshape(out.shape[:2] + (h * d,)), self.o_proj[...], out_dtype=RESIDUAL_DTYPE)
        return y, (k, v)


class MLP(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype, param_dtype, rules=None):
        e, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = param(rngs, (e, f), ("embed", "mlp"), param_dtype)
        self.up_proj = param(rngs, (e, f), ("embed", "mlp"), param_dtype)
        self.down_proj = param(rngs, (f, e), ("mlp", "embed"), param_dtype)
        self.dtype, self.rules = dtype, rules

    def __call__(self, x):
        g = checkpoint_name(matmul(x, self.gate_proj[...]), "mlp_gate")
        u = checkpoint_name(matmul(x, self.up_proj[...]), "mlp_up")
        h = constrain(swiglu(g, u), ("batch", "length", "act_mlp"), self.rules)
        return matmul(h, self.down_proj[...], out_dtype=RESIDUAL_DTYPE)


# Inside a decoder layer's backward pass these are recomputed from what is saved, being
# cheap elementwise work: each RMSNorm's output (from its input and [.., 1] reciprocal rms)
# and silu(gate) * up, the down projection's input (from the gate and up outputs, which
# are saved by name). A saved activation costs a zero-filled [L, B, T, ..] buffer in the
# layer scan, a copy into it and a copy out of it in the backward pass.
_RECOMPUTE_CHEAP = jax.checkpoint_policies.save_only_these_names("mlp_gate", "mlp_up")


def _norm_then(norm, fn):
    """fn(norm(x)) with the norm's output recomputed in the backward pass."""
    return jax.checkpoint(lambda x: fn(norm(x)), policy=_RECOMPUTE_CHEAP, prevent_cse=False)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype, param_dtype, rules=None,
                 attention: str = "xla"):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.attn = Attention(cfg, rules=rules, attention=attention, **kw)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.mlp = MLP(cfg, rules=rules, **kw)
        self.rules = rules

    def __call__(self, x, rope, mask, kv_cache=None, cache_index=None, causal=False, prefix=None):
        qkv = _norm_then(self.attn_norm, self.attn.project)(x)
        h, new_kv = self.attn(qkv, rope, mask, kv_cache, cache_index, causal, prefix)
        x = constrain(x + h, ("batch", "length", "act_embed"), self.rules)
        x = x + _norm_then(self.mlp_norm, self.mlp)(x)
        return constrain(x, ("batch", "length", "act_embed"), self.rules), new_kv
