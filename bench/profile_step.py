"""Where a train step's time goes: the top XLA ops of one profiled step, with each matmul's rate.

    python bench/profile_step.py [--preset smollm2-135m] [--seq 512] [--batch 4] [--kind lm|dpo|dpo-pre]
                                 [--top 15] [--dtype float32|bfloat16] [--prompt 0.0] [--sources 25]

Runs the step under `jax.profiler.trace` (perfetto trace in --trace-dir), sums each op's
duration over the step and names it by the JAX operation it came from (the HLO
metadata), so "ynn_fusion.31" reads as the matmul of the MLP's backward pass. Matmul ops
also show their shapes, how often they ran and their GFLOP/s (FLOPs from the HLO's dot
shapes). XLA:CPU runs independent ops side by side on its threads, so an op's duration
can exceed its share of the step (two matmuls at ~90 GFLOP/s each may be two halves of
the machine), and plain `dot` ops that run asynchronously show only their launch.
Where the layers run unrolled (bf16 on CPU) each layer's ops are separate HLO ops, so the
top-ops list splits one source op 30 ways; the "by source op" table sums XLA ops that came
from the same JAX operation (ops without metadata, e.g. copies XLA inserted, count as "?").
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
import numpy as np

from train_step import build_ours  # bench/ is on sys.path when run as a script

from findap_jax.host_malloc import reexec_with_host_malloc
from findap_jax.model import get_preset

_META = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')
_DEF = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\w+\[[\d,]*\])")
_DOT = re.compile(r"= (\w+\[[\d,]*\])\S* dot\(%?([\w.\-]+), %?([\w.\-]+)\).*?lhs_contracting_dims=\{([\d,]*)\}")


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op path it came from (jit(step)/... trimmed)."""
    out = {}
    for line in hlo_text.splitlines():
        m = _META.match(line)
        if m:
            op = re.sub(r"^jit\(step\)/", "", m.group(2))
            out[m.group(1)] = op.replace("transpose(jvp())", "bwd").replace("jvp()", "fwd")
    return out


def _dims(shape: str) -> list[int]:
    inside = shape[shape.index("[") + 1:-1]
    return [int(x) for x in inside.split(",") if x]


def dot_flops(hlo_text: str) -> dict[str, tuple[float, str]]:
    """HLO op name -> (FLOPs of one run, "lhs x rhs -> out") for every dot and every fusion
    that calls a computation holding dots (YNNPACK's matmul fusions)."""
    shapes = {m.group(1): m.group(2) for m in map(_DEF.match, hlo_text.splitlines()) if m}
    bodies, cur = {}, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head:
            cur = bodies.setdefault(head.group(1), [])
        elif cur is not None:
            cur.append(line)

    def dots_in(lines):
        flops, desc = 0.0, []
        for line in lines:
            d = _DOT.search(line)
            if d and d.group(2) in shapes:
                out, lhs = _dims(d.group(1)), _dims(shapes[d.group(2)])
                k = np.prod([lhs[int(i)] for i in d.group(4).split(",") if i])
                flops += 2.0 * np.prod(out) * k
                desc.append(f"{shapes[d.group(2)]} x {shapes.get(d.group(3), '?')} -> {d.group(1)}")
        return flops, "; ".join(desc)

    fused = set(re.findall(r"fusion\(.*?calls=%?([\w.\-]+)", hlo_text))   # fusion bodies: not ops of their own
    out = {}
    for comp, lines in bodies.items():
        if comp in fused:
            continue
        for line in lines:
            m = _DEF.match(line)
            called = re.search(r"calls=%?([\w.\-]+)", line) if m and "fusion(" in line else None
            f, desc = dots_in(bodies.get(called.group(1), []) if called else [line]) if m else (0.0, "")
            if f:
                out[m.group(1)] = (f, desc)
    return out


def by_source(op_time: dict, op_runs: dict, names: dict, matmuls) -> list[tuple[str, float, int]]:
    """(source, time, runs) for the JAX operations the ops came from, longest first: the
    ops' times summed by their metadata's op path, matmuls marked "MATMUL"."""
    time, runs = collections.Counter(), collections.Counter()
    for op, t in op_time.items():
        key = ("MATMUL " if op in matmuls else "") + names.get(op, "?")
        time[key] += t
        runs[key] += op_runs[op]
    return [(k, t, runs[k]) for k, t in time.most_common()]


def by_shape(op_time: dict, op_runs: dict, matmuls) -> list[tuple[str, float, int, float]]:
    """(shapes, time, runs, GFLOP/s) for the matmul ops grouped by operand shapes, longest
    first: which matmul shapes run far below the probe's rate. The rates are as the trace
    times them: ops that run concurrently share the cores (so read lower), and Eigen dots
    (XLA's fallback) are traced for less than their run (so can read above the peak)."""
    time, runs, flops = collections.Counter(), collections.Counter(), collections.Counter()
    for op, t in op_time.items():
        if op in matmuls:
            f, desc = matmuls[op]
            time[desc] += t
            runs[desc] += op_runs[op]
            flops[desc] += f * op_runs[op]
    return [(k, t, runs[k], flops[k] / t / 1e3 if t else 0.0) for k, t in time.most_common()]


_CONTAINERS = ("while", "cond", "conditional", "call")   # their time is their body's ops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--kind", default="lm", choices=["lm", "dpo", "dpo-pre"])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--prompt", type=float, default=0.0, help="DPO pairs' shared prompt, as in train_step.py")
    ap.add_argument("--sources", type=int, default=25, help="rows of the by-source-op table (0: none)")
    ap.add_argument("--shapes", type=int, default=15, help="rows of the by-matmul-shape table (0: none)")
    ap.add_argument("--trace-dir", default="/tmp/findap_profile")
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)
    step, state, batch, extra = build_ours(get_preset(args.preset), args.kind, args.batch, args.seq, args.dtype,
                                           prompt=args.prompt)
    hlo = step.lower(state, batch, *extra).compile().as_text()
    names, flops = op_names(hlo), dot_flops(hlo)
    hlo_ops = set(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", hlo, re.M))
    for _ in range(2):   # compile, then one warm step
        state, m = step(state, batch, *extra)
        jax.block_until_ready(m["loss"])
    shutil.rmtree(args.trace_dir, ignore_errors=True)
    with jax.profiler.trace(args.trace_dir, create_perfetto_trace=True):
        state, m = step(state, batch, *extra)
        jax.block_until_ready(m["loss"])
    trace = json.load(gzip.open(glob.glob(f"{args.trace_dir}/**/*.trace.json.gz", recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_op, runs, by_kind = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or "dur" not in e or not re.fullmatch(r"[\w\-]+(\.\d+)?", name) \
                or name.startswith(_CONTAINERS) or name not in hlo_ops:
            continue
        by_op[name] += e["dur"]
        runs[name] += 1
        by_kind["matmul" if name in flops else re.sub(r"\.\d+$", "", name)] += e["dur"]
    total = sum(by_op.values())
    mm_flops = sum(flops[n][0] * runs[n] for n in by_op if n in flops)
    print(f"{args.preset}, seq {args.seq}, batch {args.batch}, {args.dtype}, {args.kind} step: {total / 1e6:.2f} s "
          f"of op time; matmuls {by_kind['matmul'] / 1e6:.2f} s for {mm_flops / 1e9:.0f} GFLOP")
    print("\nby kind:")
    for k, v in by_kind.most_common(8):
        print(f"  {100 * v / total:5.1f}%  {k}")
    if args.sources:
        print(f"\nby source op, top {args.sources} (time, XLA op runs):")
        for src, v, n in by_source(by_op, runs, names, flops)[:args.sources]:
            print(f"  {100 * v / total:5.1f}%  {v / 1e3:8.1f} ms x{n:<5} {src[-90:]}")
    if args.shapes:
        print(f"\nmatmuls by shape, top {args.shapes} (time, runs, GFLOP/s):")
        for desc, v, n, rate in by_shape(by_op, runs, flops)[:args.shapes]:
            print(f"  {100 * v / total:5.1f}%  {v / 1e3:8.1f} ms x{n:<5} {rate:5.0f}  {desc[:110]}")
    print(f"\ntop {args.top} ops (time, runs, GFLOP/s for matmuls):")
    for name, v in by_op.most_common(args.top):
        f, desc = flops.get(name, (0.0, ""))
        rate = f"{f * runs[name] / v / 1e3:5.0f}" if f else "    -"
        print(f"  {100 * v / total:5.1f}%  {v / 1e3:8.1f} ms x{runs[name]:<4} {rate}  {name:30} "
              f"{names.get(name, '?')[-60:]}  {desc[:80]}")


if __name__ == "__main__":
    main()
