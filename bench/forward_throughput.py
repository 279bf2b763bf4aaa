"""Forward-pass throughput of SmolLM2-135M: findap-jax vs transformers, same process.

    python bench/forward_throughput.py [--seq 128] [--batches 1,8] [--repeats 5]

Both run fp32 on the CPU; timings are medians after one warm-up call. Prints tokens/s
and the ratio. transformers reads the HF export of the same GGUF weights.
"""
from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

from timing import median_time  # bench/timing.py (the script's folder is on sys.path)

from findap_jax import load_pretrained
from findap_jax.checkpoints import save_pretrained
from findap_jax.checkpoints.hub import cache_dir, smollm2_gguf
from findap_jax.host_malloc import reexec_with_host_malloc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)

    import torch
    from transformers import AutoModelForCausalLM

    model, tok = load_pretrained(smollm2_gguf())
    hf_dir = cache_dir() / "models" / "smollm2-135m-instruct-hf"
    if not (hf_dir / "config.json").exists():
        save_pretrained(model, tok, hf_dir, to="hf")
    ref = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    forward = nnx.jit(lambda m, x: m(x))
    print(f"device: {jax.devices()[0].device_kind}, torch threads {torch.get_num_threads()}, "
          f"seq {args.seq}, fp32")
    print(f"{'batch':>5} {'findap-jax tok/s':>17} {'transformers tok/s':>19} {'ratio':>6}")
    for b in [int(x) for x in args.batches.split(",")]:
        ids = np.random.default_rng(0).integers(0, 49152, (b, args.seq)).astype(np.int32)
        t_ours = median_time(lambda: forward(model, ids).block_until_ready(), args.repeats)
        tids = torch.as_tensor(ids, dtype=torch.long)

        def run_ref():
            with torch.no_grad():
                ref(tids, use_cache=False)
        t_ref = median_time(run_ref, args.repeats)
        n = b * args.seq
        print(f"{b:>5} {n / t_ours:>17.0f} {n / t_ref:>19.0f} {t_ref / t_ours:>6.2f}")


if __name__ == "__main__":
    main()
