"""Matmul rate of each library XLA:CPU can hand a dot to, and of torch, at the train step's shapes.

    python bench/matmul_libraries.py [--dtypes float32,bfloat16] [--repeats 5] [--skip-torch]

Why: the train-step ratios against transformers are mostly a contest of matmul kernels, and
which kernel is fastest depends on the CPU. On the AMD EPYC machines of sessions 16-22 XLA's
default (YNNPACK) and torch ran fp32 matmuls at about the same rate; on an Intel Xeon with AMX
(session 23) torch's MKL/oneDNN ran them 1.1-1.4x faster and its bf16 ones ~2x faster. Each
XLA variant is the same jitted dot compiled with other per-call compiler options (no
process-wide XLA_FLAGS): YNNPACK (the default), Eigen (YNNPACK fusions off) and oneDNN
(`xla_cpu_use_onednn`). bf16 dots accumulate in fp32 as the model's do. GFLOP/s, the best of
--repeats rounds in which the implementations take turns (this machine's speed drifts by
tens of percent within minutes).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from timing import cpu_summary  # bench/timing.py

# (name, m, k, n): SmolLM2-135M at batch 4 x 512 (2,048 positions), hidden 576, MLP 1,536,
# kv width 192, the tied head's 49,152 words over 256-position chunks (train.head_chunk)
SHAPES = [("square 2048", 2048, 2048, 2048), ("MLP gate/up", 2048, 576, 1536), ("MLP down", 2048, 1536, 576),
          ("q/o proj", 2048, 576, 576), ("k/v proj", 2048, 576, 192), ("head chunk", 256, 576, 49152)]
XLA_VARIANTS = {"xla ynnpack": None, "xla eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
                "xla onednn": {"xla_cpu_use_onednn": True}}


def operands(m: int, k: int, n: int, dtype: str):
    """The [m, k] and [k, n] operands every XLA variant multiplies (seeded, so a test can rebuild them)."""
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.standard_normal((m, k)), dtype), jnp.asarray(rng.standard_normal((k, n)), dtype)


def xla_matmul(m: int, k: int, n: int, dtype: str, options):
    """A callable running one jitted [m, k] x [k, n] dot compiled with `options` (returns the product)."""
    a, b = operands(m, k, n, dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32), compiler_options=options)
    return lambda: f(a, b).block_until_ready()


def torch_matmul(m: int, k: int, n: int, dtype: str):
    import torch
    dt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
    return lambda: a @ b


def best_rates(calls: dict, flops: float, repeats: int) -> dict:
    """GFLOP/s of each call, best of `repeats` rounds that give every call a turn (after a
    warm-up each), so a drift in the machine's speed hits all alike."""
    best = {}
    for fn in calls.values():
        fn()
    for _ in range(repeats):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t)
    return {name: flops / t / 1e9 for name, t in best.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()
    print(cpu_summary())
    impls = list(XLA_VARIANTS) + ([] if args.skip_torch else ["torch"])
    print(f"{'dtype':9} {'shape':12} {'m x k x n':>18} " + " ".join(f"{i:>12}" for i in impls) + "   (GFLOP/s)")
    for dtype in args.dtypes.split(","):
        for name, m, k, n in SHAPES:
            calls = {i: xla_matmul(m, k, n, dtype, XLA_VARIANTS[i]) if i != "torch" else torch_matmul(m, k, n, dtype)
                     for i in impls}
            rates = best_rates(calls, 2.0 * m * k * n, args.repeats)
            print(f"{dtype:9} {name:12} {f'{m}x{k}x{n}':>18} " + " ".join(f"{rates[i]:12.0f}" for i in impls),
                  flush=True)


if __name__ == "__main__":
    main()
