"""Llama building blocks in Flax NNX: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Parameters carry logical axis names (metadata `out_sharding`); activations are constrained
by logical names through `findap_jax.parallel.constrain`. Compute runs in `dtype`, weights
are stored in `param_dtype` (fp32 master weights with bf16 compute is the usual pairing).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from findap_jax.model.config import LlamaConfig
from findap_jax.parallel.sharding import constrain

_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


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
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)


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


def apply_rope(x, positions, inv_freq):
    """Rotate-half RoPE (HF layout): x [B, T, H, D], positions [B, T]."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B,T,D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x.astype(jnp.float32) * cos + rotated * sin).astype(x.dtype)


def attend(q, k, v, mask):
    """Grouped-query attention. q [B,T,H,D], k/v [B,S,K,D], mask [B,T,S] bool."""
    b, t, h, d = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(d)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype, param_dtype, rules=None):
        e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = param(rngs, (e, h, d), ("embed", "heads", "head_dim"), param_dtype)
        self.k_proj = param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.v_proj = param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.o_proj = param(rngs, (h, d, e), ("heads", "head_dim", "embed"), param_dtype)
        self.dtype, self.rules = dtype, rules

    def __call__(self, x, positions, inv_freq, mask, kv_cache=None, cache_index=None):
        """Returns (out, (k, v)); with kv_cache=(k, v) the new keys are written at cache_index."""
        dt = self.dtype
        q = jnp.einsum("bte,ehd->bthd", x, self.q_proj[...].astype(dt))
        k = jnp.einsum("bte,ehd->bthd", x, self.k_proj[...].astype(dt))
        v = jnp.einsum("bte,ehd->bthd", x, self.v_proj[...].astype(dt))
        q = constrain(q, ("batch", "length", "act_heads", "head_dim"), self.rules)
        k = constrain(k, ("batch", "length", "act_kv_heads", "head_dim"), self.rules)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        if kv_cache is not None:
            ck, cv = kv_cache
            k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, cache_index, 0, 0))
        out = attend(q, k.astype(dt), v.astype(dt), mask)
        out = constrain(out, ("batch", "length", "act_heads", "head_dim"), self.rules)
        y = jnp.einsum("bthd,hde->bte", out, self.o_proj[...].astype(dt))
        return y, (k, v)


class MLP(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype, param_dtype, rules=None):
        e, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = param(rngs, (e, f), ("embed", "mlp"), param_dtype)
        self.up_proj = param(rngs, (e, f), ("embed", "mlp"), param_dtype)
        self.down_proj = param(rngs, (f, e), ("mlp", "embed"), param_dtype)
        self.dtype, self.rules = dtype, rules

    def __call__(self, x):
        dt = self.dtype
        g = x @ self.gate_proj[...].astype(dt)
        u = x @ self.up_proj[...].astype(dt)
        h = constrain(jax.nn.silu(g) * u, ("batch", "length", "act_mlp"), self.rules)
        return h @ self.down_proj[...].astype(dt)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs, dtype, param_dtype, rules=None):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.attn = Attention(cfg, rules=rules, **kw)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.mlp = MLP(cfg, rules=rules, **kw)
        self.rules = rules

    def __call__(self, x, positions, inv_freq, mask, kv_cache=None, cache_index=None):
        h, new_kv = self.attn(self.attn_norm(x), positions, inv_freq, mask, kv_cache, cache_index)
        x = constrain(x + h, ("batch", "length", "act_embed"), self.rules)
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ("batch", "length", "act_embed"), self.rules), new_kv
