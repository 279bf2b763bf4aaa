"""Positions a preference epoch computes with prompt-shared rows vs separate rows, and the
step shapes (compiles) each row multiple costs.

    python bench/shared_prompt_savings.py [--mixture findap_general_preference] [--seq 512]
                                          [--batch 8] [--multiples 16,32,64,128]

Tokenizes the mixture with SmolLM2's tokenizer (the configs' default model), batches it as
the trainer does (shuffled, whole batches) and counts, per epoch, the positions the
policy runs: separate rows pad both sides to --seq; prompt-shared rows
(`train.shared_prompt`) pad each batch to its longest pair's need rounded up to the
multiple, or keep the separate rows where that is not worth it (`worth_sharing`); packed,
the pairs that fit share those rows (`train.pack_pairs`, one device: any row count). For
comparison: separate rows padded to their batch's longest row (same multiple) instead of
to --seq, which is what trimming the padding alone would give.
"""
from __future__ import annotations

import argparse

from dpo_real_pairs import real_batches  # bench/ is on sys.path when run as a script

from findap_jax.train.shared_prompt import pair_needs, plan_rows, shared_length, worth_sharing


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixture", default="findap_general_preference")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--multiples", default="16,32,64,128")
    args = ap.parse_args()
    batches = real_batches(args.mixture, args.seq, args.batch)
    separate = sum(2 * b["chosen_input_tokens"].size for b in batches)
    real = sum(int((b["chosen_segment_ids"] > 0).sum() + (b["rejected_segment_ids"] > 0).sum()) for b in batches)
    print(f"{args.mixture}, seq {args.seq}, batches of {args.batch} pairs: {len(batches)} batches; separate rows "
          f"compute {separate} positions per epoch, {real / separate:.3f} of them real tokens")
    for m in map(int, args.multiples.split(",")):
        shapes, computed, trimmed, packed, packed_shapes = set(), 0, 0, 0, set()
        for b in batches:
            longest = max(int((b[f"{side}_segment_ids"] > 0).sum(1).max()) for side in ("chosen", "rejected"))
            trimmed += 2 * len(b["chosen_input_tokens"]) * min(args.seq, -(-longest // m) * m)
            length = shared_length(b, m)
            if worth_sharing(b, length):
                shapes.add(length)
                computed += len(b["chosen_input_tokens"]) * length
            else:
                shapes.add("separate")
                computed += 2 * b["chosen_input_tokens"].size
            rows = len(plan_rows(pair_needs(b), length))
            if worth_sharing(b, length, rows):
                packed_shapes.add((rows, length))
                packed += rows * length
            else:
                packed_shapes.add("separate")
                packed += 2 * b["chosen_input_tokens"].size
        print(f"  multiple {m:4}: prompt-shared rows {computed / separate:.3f} of the separate rows' positions "
              f"({len(shapes)} step shapes), packed {packed / separate:.3f} ({len(packed_shapes)}); separate rows "
              f"padded to their batch's longest {trimmed / separate:.3f}")


if __name__ == "__main__":
    main()
