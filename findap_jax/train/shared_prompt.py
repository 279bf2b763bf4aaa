"""Preference pairs with their prompt computed once (`train.shared_prompt`).

A pair's chosen and rejected rows start with the same prompt, and a plain DPO step runs
the policy (and a live reference) over that prompt twice. Here each pair becomes one row

    [prompt minus its last token | last prompt token, chosen answer | last prompt token, rejected answer]

with `branch_ids` 0 / 1 / 2 and the original positions: the model's mask lets a branch
see the shared part and its own earlier tokens only (`Llama.hidden_states(branch_ids=)`),
so every trained position has the hidden state it has in its own row. The last prompt
token goes into both branches because its output predicts each answer's first token.
With a prompt of half the row the step's tokens fall from 2T to ~1.5T per pair.

This runs on the host, on the data pipeline's numpy batches, before they are sharded.
The row length is the longest pair's need rounded up to a multiple
(`train.shared_row_multiple`, default 64): one compiled step per length seen, so a
smaller multiple wastes fewer padded positions and compiles more often. A batch whose
rows would come out longer than `WORTH_IT` x T keeps its separate rows: a longer row's
attention grows with its square (a 2T row attends ~2x the pairs of two T rows), which
outweighs a few saved tokens.
"""
from __future__ import annotations

import numpy as np

SIDES = ("chosen", "rejected")
ROW_FIELDS = ("input_tokens", "target_tokens", "loss_weights", "segment_ids", "positions")
SHARED_PREFIX = "shared_"
WORTH_IT = 1.75


def _row_extent(batch: dict, side: str, i: int) -> tuple[int, int]:
    """(tokens, first trained position) of row i of one side; rows are padded, not packed."""
    seg = batch[f"{side}_segment_ids"][i]
    n = int(np.count_nonzero(seg))
    if np.any(seg[:n] != 1) or np.any(seg[n:] != 0):
        raise ValueError(f"{side} row {i}: preference rows must be one sequence padded at the end "
                         f"(segment ids 1 then 0), got segment ids {np.unique(seg).tolist()} out of order")
    w = np.flatnonzero(batch[f"{side}_loss_weights"][i][:n])
    return n, int(w[0]) if len(w) else n


def _split(batch: dict, i: int) -> tuple[int, int, int]:
    """(chosen tokens, rejected tokens, shared length s) of pair i: s never goes past a
    trained position of either side nor past where their tokens or positions differ."""
    (nc, fc), (nr, fr) = _row_extent(batch, "chosen", i), _row_extent(batch, "rejected", i)
    m = min(nc, nr)
    same = ((batch["chosen_input_tokens"][i][:m] == batch["rejected_input_tokens"][i][:m])
            & (batch["chosen_positions"][i][:m] == batch["rejected_positions"][i][:m]))
    common = int(np.argmin(same)) if not same.all() else m
    return nc, nr, min(common, fc, fr)


def shared_length(batch: dict, multiple: int) -> int:
    """Row length the pairs of `batch` need, rounded up to `multiple` and capped at two rows."""
    t = batch["chosen_input_tokens"].shape[1]
    need = max([nc + nr - s for nc, nr, s in (_split(batch, i) for i in range(len(batch["chosen_input_tokens"])))],
               default=0)
    return max(1, min(2 * t, -(-need // multiple) * multiple))


def worth_sharing(batch: dict, length: int) -> bool:
    return length <= WORTH_IT * batch["chosen_input_tokens"].shape[1]


def share_if_worth_it(batch: dict, length: int) -> dict:
    """`share_prompts(batch, length)`, or the batch as it is when that would not save work."""
    return share_prompts(batch, length) if worth_sharing(batch, length) else batch


def share_prompts(batch: dict, length: int) -> dict:
    """The `shared_*` rows (`length` long) of a padded preference batch (other keys, e.g. precomputed
    reference log-probs, pass through): input/target tokens, positions, segment ids (1 on
    every real token), branch ids, and chosen/rejected loss weights on their branches."""
    b = len(batch["chosen_input_tokens"])
    out = {f"{SHARED_PREFIX}{k}": np.zeros((b, length), batch[f"chosen_{k}"].dtype)
           for k in ("input_tokens", "target_tokens", "segment_ids", "positions")}
    out[f"{SHARED_PREFIX}branch_ids"] = np.zeros((b, length), np.int32)
    for side in SIDES:
        out[f"{SHARED_PREFIX}{side}_loss_weights"] = np.zeros((b, length), batch[f"{side}_loss_weights"].dtype)
    for i in range(b):
        nc, nr, s = _split(batch, i)
        if nc + nr - s > length:
            raise ValueError(f"pair {i} needs a shared row of {nc + nr - s} tokens; the row length is {length}")
        spans = [("chosen", 0, 0, s), ("chosen", 1, s, nc), ("rejected", 2, s, nr)]
        at = 0
        for side, branch, lo, hi in spans:
            dst = slice(at, at + hi - lo)
            for k in ("input_tokens", "target_tokens", "segment_ids", "positions"):
                out[f"{SHARED_PREFIX}{k}"][i, dst] = batch[f"{side}_{k}"][i, lo:hi]
            out[f"{SHARED_PREFIX}branch_ids"][i, dst] = branch
            if branch:
                out[f"{SHARED_PREFIX}{side}_loss_weights"][i, dst] = batch[f"{side}_loss_weights"][i, lo:hi]
            at += hi - lo
    rest = {k: v for k, v in batch.items() if not any(k == f"{side}_{f}" for side in SIDES for f in ROW_FIELDS)}
    return {**rest, **out}


def pair_side(batch: dict, side: str, field: str):
    """`{side}_{field}` of a pair batch in either layout (loss weights only, for the shared one)."""
    return batch.get(f"{SHARED_PREFIX}{side}_{field}", batch.get(f"{side}_{field}"))
