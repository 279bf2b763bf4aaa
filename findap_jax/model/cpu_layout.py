"""Row-major operands for XLA:CPU's bf16 matmuls.

XLA:CPU hands a bf16 x bf16 -> fp32 dot to YNNPACK only when both operands are row-major
and the lhs contracts its last axis (`IsDotSupportedByYnn` in XLA's ynn_support.cc); any
other bf16 dot is upcast to an fp32 one. On an AMX Xeon that costs 2-4x: a SmolLM2 weight
gradient (x^T g, both operands contracting their first axis) ran at 120-230 GFLOP/s as an
upcast dot and at 440-900 with a transposed copy of one operand, and the bf16 train
step took 0.72x its time (README, Model). A plain `x.T` does not help: it reaches XLA as a layout change, so the dot
still sees a column-major operand. `row_major` writes the copy out.

fp32 dots run as fast on either path, and GPU/TPU dots take transposed operands
natively, so callers copy only where `bf16_on_cpu` holds.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def bf16_on_cpu(dtype) -> bool:
    """Whether matmuls in `dtype` on this backend want row-major operands written out."""
    return jnp.dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu"


def row_major(x):
    """x (typically a transpose) materialised in row-major order. Reshaping to a shape with
    a unit axis behind an optimization barrier makes XLA write x out in the default layout
    before the barrier; the reshape back is free. Identity in value and gradient-free use
    only (it sits in custom backward passes and around saved operands)."""
    if x.ndim < 2:
        return x
    lifted = x.reshape(x.shape[:-1] + (1, x.shape[-1]))
    return jax.lax.optimization_barrier(lifted).reshape(x.shape)
