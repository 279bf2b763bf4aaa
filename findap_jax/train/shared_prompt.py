"""Preference pairs with their prompt computed once (`train.shared_prompt`).

A pair's chosen and rejected rows start with the same prompt, and a plain DPO step runs
the policy (and a live reference) over that prompt twice. Here each pair becomes one row

    [common prefix | rest of the chosen row | rest of the rejected row]

with `branch_ids` 0 / 1 / 2 and the original positions: the model's mask lets a branch
see the shared part and its own earlier tokens only (`Llama.hidden_states(branch_ids=)`),
so every trained position has the hidden state it has in its own row. The common prefix
is every input token the two rows share (the prompt, and any answer tokens both begin
with); a shared position predicts a chosen and a rejected target, which differ at its
last position (the prefix's last token predicts the first tokens where the rows differ), so the shared
part carries both (`shared_target_tokens` for chosen, `shared_rejected_target_tokens`)
and the head scores both from one logit row (`token_stats(alt_targets=)`). With a prompt
of half the row the step's tokens fall from 2T to 1.5T per pair.

This runs on the host, on the data pipeline's numpy batches, before they are sharded.
The row length is the longest pair's need rounded up to a multiple
(`train.shared_row_multiple`, default 64): one compiled step per length seen, so a
smaller multiple wastes fewer padded positions and compiles more often. A batch whose
rows would take more than `WORTH_IT` / 2 of the separate rows' positions (one pair per row:
longer than `WORTH_IT` x T) keeps its separate rows: a longer row's attention grows with
its square (a 2T row attends ~2x the pairs of two T rows), which outweighs a few saved
tokens.

Pairs that fit share a row (`train.pack_pairs`): real pairs vary in length (the bundled
HH-RLHF needs range 89-978 tokens at T = 512), and a batch padded to its longest pair is
mostly padding, so `plan_rows` puts each batch's pairs into as few rows of that length as
hold them (first fit, longest first), each pair a segment of its own (ids 1, 2, ... in its
row). `shared_pair_mask` [rows, B] marks the (row, segment) slots that hold a pair; the
losses sum each slot's log-probs, so the step still sees exactly the batch's B pairs. A
new (rows, length) shape compiles the step once.
"""
from __future__ import annotations

import numpy as np

SIDES = ("chosen", "rejected")
ROW_FIELDS = ("input_tokens", "target_tokens", "loss_weights", "segment_ids", "positions")
SHARED_PREFIX = "shared_"
REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")
WORTH_IT = 1.75


def _row_tokens(batch: dict, side: str, i: int) -> int:
    """Real tokens of row i of one side; rows are padded, not packed."""
    seg = batch[f"{side}_segment_ids"][i]
    n = int(np.count_nonzero(seg))
    if np.any(seg[:n] != 1) or np.any(seg[n:] != 0):
        raise ValueError(f"{side} row {i}: preference rows must be one sequence padded at the end "
                         f"(segment ids 1 then 0), got segment ids {np.unique(seg).tolist()} out of order")
    return n


def _split(batch: dict, i: int) -> tuple[int, int, int]:
    """(chosen tokens, rejected tokens, shared length s) of pair i: s is where the two rows'
    input tokens or positions first differ."""
    nc, nr = _row_tokens(batch, "chosen", i), _row_tokens(batch, "rejected", i)
    m = min(nc, nr)
    same = ((batch["chosen_input_tokens"][i][:m] == batch["rejected_input_tokens"][i][:m])
            & (batch["chosen_positions"][i][:m] == batch["rejected_positions"][i][:m]))
    return nc, nr, int(np.argmin(same)) if not same.all() else m


def pair_needs(batch: dict) -> list[int]:
    """Tokens each pair's prompt-shared sequence takes."""
    return [nc + nr - s for nc, nr, s in (_split(batch, i) for i in range(len(batch["chosen_input_tokens"])))]


def shared_length(batch: dict, multiple: int) -> int:
    """Row length the pairs of `batch` need, rounded up to `multiple` and capped at two rows."""
    t = batch["chosen_input_tokens"].shape[1]
    need = max(pair_needs(batch), default=0)
    return max(1, min(2 * t, -(-need // multiple) * multiple))


def worth_sharing(batch: dict, length: int, rows: int | None = None) -> bool:
    """Whether `rows` (default one per pair) shared rows of `length` beat the separate rows:
    at most WORTH_IT / 2 of their positions (one pair per row: length <= WORTH_IT x T)."""
    b, t = batch["chosen_input_tokens"].shape
    return (b if rows is None else rows) * length <= WORTH_IT * b * t


def plan_rows(needs: list[int], length: int, pack: bool = True) -> list[list[int]]:
    """Which pairs go into which row: one pair per row, or (`pack`) first fit of the pairs,
    longest first, into rows of `length` tokens. Deterministic for the same needs."""
    if not pack:
        return [[i] for i in range(len(needs))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(needs)), key=lambda i: -needs[i]):
        if needs[i] > length:
            raise ValueError(f"pair {i} needs a shared row of {needs[i]} tokens; the row length is {length}")
        at = next((r for r, free in enumerate(room) if free >= needs[i]), None)
        if at is None:
            rows.append([])
            room.append(length)
            at = len(rows) - 1
        rows[at].append(i)
        room[at] -= needs[i]
    return rows


def share_if_worth_it(batch: dict, length: int, pack: bool = False) -> dict:
    """`share_prompts(batch, length, ...)` (pairs packed into shared rows with `pack`), or the
    batch as it is when that would not save work."""
    rows = plan_rows(pair_needs(batch), length, pack)
    return share_prompts(batch, length, rows) if worth_sharing(batch, length, len(rows)) else batch


def share_prompts(batch: dict, length: int, rows: list[list[int]] | None = None,
                  num_rows: int | None = None) -> dict:
    """The `shared_*` rows (`num_rows` x `length`; default one row per pair) of a padded
    preference batch: input tokens, positions, segment ids (the pair's slot in its row + 1
    on every real token), branch ids, target tokens (chosen on branches 0 and 1, rejected on
    branch 2), rejected target tokens (on branches 0 and 2), chosen/rejected loss weights
    (on the shared part and their own branch), and `shared_pair_mask` [num_rows, B] (1 on
    slots that hold a pair). `rows[r]` lists the pairs of row r (`plan_rows`); rows past
    them stay empty. Precomputed reference log-probs [B] move to their pairs' slots,
    [num_rows, B]; other keys pass through."""
    b = len(batch["chosen_input_tokens"])
    rows = [[i] for i in range(b)] if rows is None else rows
    num_rows = len(rows) if num_rows is None else num_rows
    if num_rows < len(rows):
        raise ValueError(f"{len(rows)} rows of pairs do not fit num_rows={num_rows}")
    out = {f"{SHARED_PREFIX}{k}": np.zeros((num_rows, length), batch[f"chosen_{k}"].dtype)
           for k in ("input_tokens", "target_tokens", "segment_ids", "positions")}
    out[f"{SHARED_PREFIX}rejected_target_tokens"] = np.zeros((num_rows, length), batch["rejected_target_tokens"].dtype)
    out[f"{SHARED_PREFIX}branch_ids"] = np.zeros((num_rows, length), np.int32)
    out[f"{SHARED_PREFIX}pair_mask"] = np.zeros((num_rows, b), np.int32)
    for side in SIDES:
        out[f"{SHARED_PREFIX}{side}_loss_weights"] = np.zeros((num_rows, length), batch[f"{side}_loss_weights"].dtype)
    refs = [k for k in REF_KEYS if k in batch]
    for k in refs:
        out[k] = np.zeros((num_rows, b), np.float32)
    for r, members in enumerate(rows):
        at = 0
        for slot, i in enumerate(members):
            nc, nr, s = _split(batch, i)
            if at + nc + nr - s > length:
                left = f"the row length is {length}" if at == 0 else f"row {r} has {length - at} of {length} left"
                raise ValueError(f"pair {i} needs a shared row of {nc + nr - s} tokens; {left}")
            for side, branch, lo, hi in [("chosen", 0, 0, s), ("chosen", 1, s, nc), ("rejected", 2, s, nr)]:
                dst = slice(at, at + hi - lo)
                for k in ("input_tokens", "target_tokens", "positions"):
                    out[f"{SHARED_PREFIX}{k}"][r, dst] = batch[f"{side}_{k}"][i, lo:hi]
                out[f"{SHARED_PREFIX}segment_ids"][r, dst] = slot + 1
                out[f"{SHARED_PREFIX}branch_ids"][r, dst] = branch
                out[f"{SHARED_PREFIX}{side}_loss_weights"][r, dst] = batch[f"{side}_loss_weights"][i, lo:hi]
                if branch != 1:
                    out[f"{SHARED_PREFIX}rejected_target_tokens"][r, dst] = batch["rejected_target_tokens"][i, lo:hi]
                if branch == 0:
                    out[f"{SHARED_PREFIX}rejected_loss_weights"][r, dst] = batch["rejected_loss_weights"][i, lo:hi]
                at += hi - lo
            out[f"{SHARED_PREFIX}pair_mask"][r, slot] = 1
            for k in refs:
                out[k][r, slot] = batch[k][i]
    placed = sorted(i for members in rows for i in members)
    if placed != list(range(b)):
        raise ValueError(f"rows must hold each of the {b} pairs once, got {rows}")
    rest = {k: v for k, v in batch.items() if k not in refs and not any(
        k == f"{side}_{f}" for side in SIDES for f in ROW_FIELDS)}
    return {**rest, **out}


def pair_side(batch: dict, side: str, field: str):
    """`{side}_{field}` of a pair batch in either layout (loss weights only, for the shared one)."""
    return batch.get(f"{SHARED_PREFIX}{side}_{field}", batch.get(f"{side}_{field}"))
