"""DPO on real preference pairs: findap-jax vs a TRL-style transformers step, same batches.

    python bench/dpo_real_pairs.py [--mixture findap_general_preference] [--seq 512] [--batch 4]
                                   [--batches 6] [--rounds 2] [--multiple 64] [--no-pack]
                                   [--dtype float32|bfloat16]

`bench/train_step.py` times DPO on random rows of one fixed shape; real pairs vary in length
and share their prompt, and both stacks use that. This takes --batches batches of the
mixture as the trainer reads them (SmolLM2's tokenizer, rows of --seq, shuffled) and runs a
live-reference DPO step with AdamW on each, SmolLM2-135M shapes, random weights:

- findap-jax: the trainer's rows, `share_if_worth_it` — each pair prompt-shared, rows of the
  batch's longest need rounded up to --multiple (train.shared_row_multiple), the pairs that
  fit packed into one row (train.pack_pairs; --no-pack: one pair per row), or the separate
  rows where sharing would not pay. Each new row shape compiles the step once; the first
  pass over the batches (untimed) holds those compiles and is reported.
- transformers (TRL's DPOTrainer way, TRL 1.16): chosen and rejected rows concatenated, both
  sides cut to the batch's longest real row (TRL pads a batch to its longest) and passed
  with their attention mask, the frozen reference's forward without gradients, log-probs
  summed over the answer tokens;
- the same without the attention mask ("causal only"): the rows are padded at the end, so
  causal attention alone gives every real position the same log-prob, and torch's attention
  then takes its causal path instead of an explicit mask (what a hand-tuned torch step could do).

The batches are read in a child process, so that no tf.data thread shares this process
with the timed steps. Tokens/s counts the pairs' real tokens (both sides, prompts included) for every stack.
Each round times every batch once per stack, the stacks one after the other, each pass
after one untimed step of its own (the first step after the other stack re-faults freed
memory; see timing.interleaved_times); the ratio is the median of the per-round ratios.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from results import append_record  # bench/ is on sys.path when run as a script
from timing import cpu_summary
from train_step import our_step, torch_dpo_update, torch_training

from findap_jax import defaults, load_pretrained
from findap_jax.checkpoints.hub import smollm2_gguf
from findap_jax.config import load_config
from findap_jax.data.pipeline import make_iterator, register
from findap_jax.host_malloc import reexec_with_host_malloc
from findap_jax.model import get_preset
from findap_jax.train.shared_prompt import share_if_worth_it, shared_length

_FIELDS = ("input_tokens", "target_tokens", "loss_weights", "segment_ids", "positions")


def real_batches(mixture: str, seq: int, batch: int, count: int | None = None) -> list[dict]:
    """The first `count` (None: all) whole batches of the mixture's preference pairs, as the
    trainer reads them (shuffled, SmolLM2's tokenizer, configs/dpo.py)."""
    cfg = load_config("configs/dpo.py", [f"data.mixture={mixture}", f"data.seq_len={seq}",
                                         f"data.batch_size={batch}", f"model.path={smollm2_gguf()}"])
    _, tokenizer = load_pretrained(cfg.model.path)
    register(cfg.data, tokenizer)
    out = []
    for b in make_iterator(cfg.data, "train", num_epochs=1, shuffle=True, drop_remainder=True):
        out.append({f"{side}_{f}": np.asarray(b[f"{side}_{f}"]) for side in ("chosen", "rejected") for f in _FIELDS})
        if len(out) == count:
            return out
    if count is None:
        return out
    raise ValueError(f"{mixture} has fewer than {count} batches of {batch} pairs at seq {seq}")


def real_tokens(b: dict) -> int:
    return int((b["chosen_segment_ids"] > 0).sum() + (b["rejected_segment_ids"] > 0).sum())


def ours(cfg, batches, multiple, dtype, pack=True):
    """One callable per batch: the trainer's DPO step on the trainer's rows for it."""
    step, state, params, _ = our_step(cfg, "dpo", dtype)
    holder, ref = [state], jax.tree.map(jnp.copy, params)
    rows = [jax.tree.map(jnp.asarray, share_if_worth_it(b, shared_length(b, multiple), pack)) for b in batches]
    positions = sum(r["shared_input_tokens"].size if "shared_input_tokens" in r else 2 * r["chosen_input_tokens"].size
                    for r in rows)

    def make(r):
        def run():
            holder[0], m = step(holder[0], r, ref)
            jax.block_until_ready(m["loss"])
        return run
    shapes = {"x".join(map(str, r["shared_input_tokens"].shape)) if "shared_input_tokens" in r else "separate"
              for r in rows}
    return [make(r) for r in rows], positions, shapes


def trl_style(cfg, batches, dtype, with_mask=True):
    """One callable per batch: a TRL-style DPO step in transformers on the batch's rows cut
    to its longest real row (with their attention mask, as TRL, or causal only)."""
    import torch
    model, make_ref, opt, autocast = torch_training(cfg, dtype)
    ref = make_ref()
    positions = 0

    def make(b):
        nonlocal positions
        n = len(b["chosen_input_tokens"])
        cat = lambda f: np.concatenate([b[f"chosen_{f}"], b[f"rejected_{f}"]])  # noqa: E731
        length = int(((cat("segment_ids") > 0).sum(1)).max())
        ids = torch.from_numpy(cat("input_tokens")[:, :length].astype(np.int64))
        tgt = torch.from_numpy(cat("target_tokens")[:, :length].astype(np.int64))
        mask = torch.from_numpy((cat("segment_ids")[:, :length] > 0).astype(np.int64))
        weights = torch.from_numpy(cat("loss_weights")[:, :length].astype(np.float32))
        positions += ids.numel()

        def logps(m):
            logits = m(input_ids=ids, attention_mask=mask if with_mask else None, use_cache=False).logits
            lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt[..., None])[..., 0]
            return (lp * weights).sum(-1)

        def run():
            with autocast:
                with torch.no_grad():
                    r = logps(ref)
                p = logps(model)
            torch_dpo_update(p, r, n, opt)
        return run
    return [make(b) for b in batches], positions


def timed_pass(runs) -> float:
    runs[0]()   # settle: the first step after the other stack re-faults freed memory
    t = time.perf_counter()
    for run in runs:
        run()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mixture", default="findap_general_preference")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--multiple", type=int, default=defaults.train_config().shared_row_multiple)
    ap.add_argument("--no-pack", action="store_true", help="one pair per row (train.pack_pairs=false)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--json", help="append the figures to this JSON-lines file (bench/targets.py reads it)")
    args = ap.parse_args()
    reexec_with_host_malloc()
    cfg = get_preset("smollm2-135m")
    # read in a child process: the tf.data pipeline's threads, once they have run, slowed the
    # torch steps of this process by a third (8 x 512 rows: 46 s per step against 34.6 s)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        batches = pool.apply(real_batches, (args.mixture, args.seq, args.batch, args.batches))
    tokens = sum(map(real_tokens, batches))
    full = 2 * args.batch * args.seq * len(batches)
    mine, my_positions, shapes = ours(cfg, batches, args.multiple, args.dtype, pack=not args.no_pack)
    stacks = {"findap-jax": mine}
    stacks["transformers"], their_positions = trl_style(cfg, batches, args.dtype)
    stacks["causal only"], _ = trl_style(cfg, batches, args.dtype, with_mask=False)
    print(f"{args.mixture}: {len(batches)} batches of {args.batch} pairs, seq {args.seq}, {args.dtype}; "
          f"{tokens} real tokens ({tokens / full:.3f} of the rows); positions computed: findap-jax "
          f"{my_positions / full:.3f}, transformers {their_positions / full:.3f} of the full rows")
    print(cpu_summary())
    t = time.perf_counter()
    for run in mine:
        run()
    print(f"findap-jax first pass (compiles {len(shapes)} step shapes, rows x length: {sorted(shapes)}): "
          f"{time.perf_counter() - t:.1f} s")
    times = {name: [] for name in stacks}
    for _ in range(args.rounds):
        for name, runs in stacks.items():
            times[name].append(timed_pass(runs))
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:14} {med / len(batches):7.2f} s/step {tokens / med:8.1f} tokens/s")
    for peer in ("transformers", "causal only"):
        ratios = [b / a for a, b in zip(times["findap-jax"], times[peer])]
        print(f"DPO on real pairs: findap-jax / {peer} tokens/s = "
              f"{statistics.median(times[peer]) / statistics.median(times['findap-jax']):.2f} "
              f"(median of the per-round ratios: {statistics.median(ratios):.2f})")
    append_record(args.json, "dpo_real_pairs", args, {
        "real_tokens": tokens, "positions": {"findap-jax": my_positions / full, "transformers": their_positions / full},
        "tokens_per_s": {name: tokens / statistics.median(ts) for name, ts in times.items()},
        "per_round": [b / a for a, b in zip(times["findap-jax"], times["transformers"])]})


if __name__ == "__main__":
    main()
