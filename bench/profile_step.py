"""Where a train step's time goes: the top XLA ops of one profiled step.

    python bench/profile_step.py [--preset smollm2-135m] [--seq 512] [--batch 4] [--kind lm] [--top 15]

Runs the step under `jax.profiler.trace` (perfetto trace in --trace-dir), sums each op's
duration over the step and names it by the JAX operation it came from (the HLO
metadata), so "ynn_fusion.31" reads as the matmul of the MLP's backward pass.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from train_step import lm_batch  # bench/ is on sys.path when run as a script

from findap_jax import defaults
from findap_jax.host_malloc import reexec_with_host_malloc
from findap_jax.model import Llama, get_preset
from findap_jax.train.optim import make_optimizer
from findap_jax.train.step import init_state, make_train_step, split_model

_META = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op path it came from (jit(step)/... trimmed)."""
    out = {}
    for line in hlo_text.splitlines():
        m = _META.match(line)
        if m:
            op = re.sub(r"^jit\(step\)/", "", m.group(2))
            out[m.group(1)] = op.replace("transpose(jvp())", "bwd").replace("jvp()", "fwd")
    return out


_CONTAINERS = ("while", "cond", "conditional", "call")   # their time is their body's ops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--kind", default="lm", choices=["lm"])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--trace-dir", default="/tmp/findap_profile")
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)
    cfg = get_preset(args.preset)
    tc = defaults.train_config()
    tc.update(dict(loss=args.kind, steps=1000, warmup=0, schedule="constant", lr=1e-5))
    graphdef, params, _ = split_model(Llama(cfg, rngs=nnx.Rngs(0), dtype=jnp.dtype(args.dtype)))
    tx, sched = make_optimizer(tc)
    step = jax.jit(make_train_step(graphdef, tx, sched, tc), donate_argnums=0)
    state = init_state(params, tx)
    batch = jax.tree.map(jnp.asarray, lm_batch(args.batch, args.seq, cfg.vocab_size, np.random.default_rng(0)))
    hlo = step.lower(state, batch).compile().as_text()
    names = op_names(hlo)
    hlo_ops = set(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", hlo, re.M))
    for _ in range(2):   # compile, then one warm step
        state, m = step(state, batch)
        jax.block_until_ready(m["loss"])
    shutil.rmtree(args.trace_dir, ignore_errors=True)
    with jax.profiler.trace(args.trace_dir, create_perfetto_trace=True):
        state, m = step(state, batch)
        jax.block_until_ready(m["loss"])
    trace = json.load(gzip.open(glob.glob(f"{args.trace_dir}/**/*.trace.json.gz", recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_op, by_kind = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or "dur" not in e or not re.fullmatch(r"[\w\-]+(\.\d+)?", name) \
                or name.startswith(_CONTAINERS) or name not in hlo_ops:
            continue
        by_op[(name, names.get(name, "?"))] += e["dur"]
        by_kind[re.sub(r"\.\d+$", "", name)] += e["dur"]
    total = sum(by_op.values())
    print(f"{args.preset}, seq {args.seq}, batch {args.batch}, {args.dtype}, {args.kind} step: {total / 1e6:.2f} s of op time")
    print("\nby kind:")
    for k, v in by_kind.most_common(8):
        print(f"  {100 * v / total:5.1f}%  {k}")
    print(f"\ntop {args.top} ops:")
    for (name, op), v in by_op.most_common(args.top):
        print(f"  {100 * v / total:5.1f}%  {v / 1e3:8.1f} ms  {name:34} {op[-90:]}")


if __name__ == "__main__":
    main()
