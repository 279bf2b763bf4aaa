"""Input-pipeline throughput of the joint CPT+IT mixture (packed rows) on this machine.

    python bench/data_pipeline.py [--seq 512] [--batch 8] [--batches 200] [--model smollm2] [--json FILE]

Reports rows/s, examples/s (segments) and tokens/s after the first batch (which pays for
tokenising and filling shuffle buffers; reported separately).
"""
from __future__ import annotations

import argparse
import time

from results import append_record  # bench/results.py (the script's folder is on sys.path)

from findap_jax import defaults
from findap_jax.checkpoints.loader import load_tokenizer
from findap_jax.data.pipeline import build_dataset, register


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--mixture", default="findap_joint")
    ap.add_argument("--json", help="append the figures to this JSON-lines file (bench/targets.py reads it)")
    args = ap.parse_args()

    cfg = defaults.data_config()
    cfg.seq_len, cfg.batch_size, cfg.mixture = args.seq, args.batch, args.mixture
    tok = load_tokenizer(args.model)
    register(cfg, tok)
    t0 = time.perf_counter()
    it = build_dataset(cfg, shard=(0, 1)).as_numpy_iterator()
    next(it)
    t1 = time.perf_counter()
    rows = segs = toks = 0
    for _ in range(args.batches):
        b = next(it)
        rows += len(b["segment_ids"])
        segs += int(b["segment_ids"].max(axis=1).sum())
        toks += int((b["segment_ids"] > 0).sum())
    dt = time.perf_counter() - t1
    print(f"{args.mixture}, seq {args.seq}, batch {args.batch}: first batch {t1 - t0:.1f}s; then "
          f"{rows / dt:.0f} rows/s, {segs / dt:.0f} examples/s, {toks / dt:.0f} tokens/s "
          f"over {args.batches} batches")
    append_record(args.json, "data_pipeline", args, {
        "first_batch_s": t1 - t0, "rows_per_s": rows / dt, "examples_per_s": segs / dt, "tokens_per_s": toks / dt})


if __name__ == "__main__":
    main()
