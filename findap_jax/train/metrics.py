"""Throughput and MFU: FLOPs per token of a train step and the device's peak FLOP/s.

Peak FLOP/s: published bf16 dense numbers for accelerators (Levanter/MaxText tables and
NVIDIA's datasheets: H100 SXM and H200 989e12, H100 PCIe 756e12, A100 312e12, TPU v4
275e12, v5e 197e12, v5p 459e12, v6e 918e12); on CPU it is measured with a large fp32
matmul probe in the same process.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

# A key matches a device kind holding all of its words; the first match wins, so variants come
# before their family. None: a variant whose peak is not listed here (NVL parts run lower clocks).
PEAK_FLOPS = {"h100 pcie": 756e12, "h100 nvl": None, "h200 nvl": None, "h100": 989e12, "h200": 989e12,
              "a100": 312e12, "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12, "tpu v5p": 459e12,
              "tpu v5": 459e12, "tpu v6": 918e12}


def published_peak_flops(device_kind: str) -> float | None:
    """The published bf16 dense peak of a device kind ("NVIDIA H100 80GB HBM3", "TPU v5 lite"),
    or None where PEAK_FLOPS does not know it."""
    kind = device_kind.lower()
    return next((v for k, v in PEAK_FLOPS.items() if all(w in kind for w in k.split())), None)


def train_flops_per_token(cfg, seq_len: int) -> float:
    """6 x matmul parameters (LM head included, tied or not: a tied head is still a matmul)
    + causal attention 6 * L * seq * H * D."""
    n = cfg.num_params(include_embedding=False)
    if cfg.tie_word_embeddings:
        n += cfg.vocab_size * cfg.hidden_size
    attn = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim  # QK^T and AV, fwd+bwd, causal half
    return 6.0 * n + attn


@functools.lru_cache(maxsize=1)
def peak_flops_per_device() -> float:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return measured_matmul_flops() / max(len(jax.local_devices()), 1)
    return published_peak_flops(dev.device_kind) or float("nan")


def measured_matmul_flops(n: int = 2048, repeats: int = 5, dtype="float32") -> float:
    """FLOP/s of an n x n matmul (fp32 by default) on this host (all local CPU devices share cores)."""
    a = jnp.ones((n, n), dtype)
    # fp32 accumulation: what the model's matmuls do (a bf16-output dot is upcast on CPU)
    f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.block_until_ready()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)
