"""Train-step MFU on an accelerator: the ~1B preset and Llama-3-8B-shaped layers.

    python bench/accelerator_mfu.py [--runs SPEC [SPEC ...]] [--steps 5] [--peak-n 0] [--peak-repeats 50]
                                    [--json FILE]

SPEC is `preset[:key=value,...]` with keys batch, seq, layers (cut the preset to this many
layers: 8B-shaped layers on one chip), dtype, param_dtype, attention, remat, head_chunk.
The default runs are `llama3.2-1b:batch=8,seq=2048` and `llama3-8b:layers=4,batch=4,seq=2048`:
the trainer's SFT/CPT step (masked CE fwd+bwd, AdamW) on one device, random weights, bf16
compute over fp32 master weights, attention `dot_product_attention` on GPU (cuDNN's fused
kernel), `splash` on TPU, the blocked XLA one elsewhere, the LM head 2,048 positions at a
time on an accelerator (`train.head_chunk`; the trainer's CPU default elsewhere).

MFU = model FLOPs per second (6N + causal attention, `metrics.train_flops_per_token`, the
LM head included) over two peaks: the chip's published bf16 dense peak
(`metrics.PEAK_FLOPS`, the convention MaxText's ~46% for Llama2-7B on 8xH100 uses) and a
bf16 n^3 matmul measured in this run. Each step is timed on its own after two warm-up
steps (compile); the median is reported, with the device's memory high-water mark so far
in the process where it tells (after the second run, the larger of the two).
Runs on CPU too (the test runs it on the tiny preset), where the measured peak is the one
that means something. It imports only jax, flax, optax, numpy and ml-collections (no
TensorFlow, seqio or torch), so on a machine that has the first four,
`pip install ml-collections` and `PYTHONPATH=. python bench/accelerator_mfu.py` from the
repository root is enough. `--json FILE` appends the results to FILE as a bench record
(bench/results.py), which bench/targets.py sets against the 50% MFU target.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from results import append_record   # bench/ is on sys.path when run as a script
from train_step import lm_batch, our_step

from findap_jax.model import get_preset
from findap_jax.train.metrics import measured_matmul_flops, published_peak_flops, train_flops_per_token

DEFAULT_RUNS = ("llama3.2-1b:batch=8,seq=2048", "llama3-8b:layers=4,batch=4,seq=2048")
_INT_KEYS = ("batch", "seq", "layers", "head_chunk")
_STR_KEYS = ("dtype", "param_dtype", "attention", "remat")


def default_attention(platform: str) -> str:
    return {"gpu": "dot_product_attention", "tpu": "splash"}.get(platform, "xla")


def parse_run(spec: str, platform: str) -> dict:
    """`preset[:key=value,...]` -> the run's settings; unknown keys and bad values are errors
    that name the spec."""
    preset, _, opts = spec.partition(":")
    # head_chunk: the trainer's default (256 positions) suits a CPU; on an accelerator a chunk of
    # 2,048 keeps the head's matmuls large and its weight-gradient sums few
    run = dict(preset=preset, batch=8, seq=2048, layers=0, head_chunk=0 if platform == "cpu" else 2048,
               dtype="bfloat16", param_dtype="float32", attention=default_attention(platform), remat="none")
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in _INT_KEYS + _STR_KEYS:
            raise ValueError(f"run {spec!r}: {item!r} is not key=value with a key among "
                             f"{sorted(_INT_KEYS + _STR_KEYS)}")
        try:
            run[key] = int(value) if key in _INT_KEYS else value
        except ValueError:
            raise ValueError(f"run {spec!r}: {key} must be an integer, got {value!r}") from None
    get_preset(preset)   # unknown preset -> KeyError naming the choices
    return run


def peak_memory(device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use")


def measure(run: dict, steps: int) -> dict:
    """Time `steps` SFT/CPT steps of one run (after two warm-up steps); returns its figures."""
    cfg = get_preset(run["preset"])
    if run["layers"]:
        cfg = cfg.replace(num_layers=run["layers"])
    train = dict(head_chunk=run["head_chunk"]) if run["head_chunk"] else {}
    step, state, _, _ = our_step(cfg, "lm", run["dtype"], run["param_dtype"],
                                 model_kw=dict(attention=run["attention"], remat=run["remat"]), **train)
    batch = jax.tree.map(jnp.asarray, lm_batch(run["batch"], run["seq"], cfg.vocab_size,
                                               np.random.default_rng(0)))
    times, losses = [], []
    for i in range(steps + 2):
        t = time.perf_counter()
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))   # blocks until the step is done
        if i >= 2:
            times.append(time.perf_counter() - t)
    tokens = run["batch"] * run["seq"]
    sec = statistics.median(times)
    return dict(run, params=cfg.num_params(), num_layers=cfg.num_layers, flops_per_token=train_flops_per_token(cfg, run["seq"]),
                step_s=sec, tokens_per_s=tokens / sec, losses=losses,
                peak_memory_bytes=peak_memory(jax.devices()[0]))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--peak-n", type=int, default=0,
                    help="size of the bf16 matmul peak probe (0: 8,192 on an accelerator, 2,048 on CPU)")
    ap.add_argument("--peak-repeats", type=int, default=50)
    ap.add_argument("--json", help="append the results to this JSON-lines file (bench/targets.py reads it)")
    args = ap.parse_args(argv)
    device = jax.devices()[0]
    runs = [parse_run(s, device.platform) for s in args.runs]   # all specs checked before any work
    n = args.peak_n or (2048 if device.platform == "cpu" else 8192)
    measured = measured_matmul_flops(n, repeats=args.peak_repeats, dtype="bfloat16")
    published = published_peak_flops(device.device_kind)
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s), jax {jax.__version__}")
    print(f"bf16 {n}^3 matmul: {measured / 1e12:.1f} TFLOP/s measured; published bf16 dense peak: "
          + (f"{published / 1e12:.0f} TFLOP/s" if published else "unknown for this chip"))
    results = []
    for run in runs:
        r = measure(run, args.steps)
        model_flops = r["flops_per_token"] * r["tokens_per_s"]
        r.update(model_tflops=model_flops / 1e12, mfu_measured_peak=model_flops / measured,
                 mfu_published_peak=model_flops / published if published else None,
                 measured_peak_tflops=measured / 1e12, device=device.device_kind)
        mem = (f", device memory peak so far {r['peak_memory_bytes'] / 2**30:.1f} GiB"
               if r["peak_memory_bytes"] else "")
        pub = f"{r['mfu_published_peak']:.3f}" if published else "n/a"
        print(f"{run['preset']} ({r['params'] / 1e9:.2f}B params, {r['num_layers']} layers), batch {run['batch']} x "
              f"seq {run['seq']}, {run['dtype']} compute / {run['param_dtype']} weights, attention "
              f"{run['attention']}, remat {run['remat']}, head_chunk {run['head_chunk'] or 'default'}: "
              f"{r['step_s']:.3f} s/step, {r['tokens_per_s']:,.0f} tokens/s, "
              f"{r['model_tflops']:.1f} TFLOP/s; MFU {pub} of the published peak, "
              f"{r['mfu_measured_peak']:.3f} of the measured matmul{mem}", flush=True)
        results.append(r)
    append_record(args.json, "accelerator_mfu", args, {"runs": results})
    return results


if __name__ == "__main__":
    main()
