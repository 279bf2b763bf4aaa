"""Token-level preprocessing shared by the seqio tasks, the evaluator and tests.

- CPT: each document is split into pieces of at most `length - 2` tokens and every
  piece is wrapped in BOS/EOS (FinDAP's chunking), so no text is dropped.
- Chat: the model's chat template with an assistant-only loss mask; examples longer
  than `length` are dropped and counted.
- Preference: chosen/rejected sequences sharing the prompt, with completion masks.
Packing into rows with segment ids happens in the seqio feature converter
(`findap_jax.data.features`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def chunk_document(ids: list[int], length: int, bos: int | None, eos: int) -> list[list[int]]:
    """Split one document's tokens into BOS + piece + EOS rows of at most `length`."""
    room = length - (2 if bos is not None else 1)
    if room <= 0:
        raise ValueError(f"sequence length {length} leaves no room for text")
    head = [bos] if bos is not None else []
    return [head + ids[i:i + room] + [eos] for i in range(0, max(len(ids), 1), room)]


def cpt_examples(texts: Iterable[tuple[str, str]], tokenizer, length: int) -> Iterator[dict]:
    """(location, text) -> {"targets", "loss_mask"} chunks; every token kept."""
    bos = tokenizer.bos_id
    for _, text in texts:
        for piece in chunk_document(tokenizer.encode(text), length, bos, tokenizer.eos_id):
            yield {"targets": np.asarray(piece, np.int32),
                   "loss_mask": np.ones(len(piece), np.int32)}


def chat_example(tokenizer, messages, length: int, where: str = "messages") -> dict | None:
    """Tokenised chat with assistant mask, or None when longer than `length`."""
    ids, mask = tokenizer.encode_chat(messages, source=where)
    if len(ids) > length:
        return None
    return {"targets": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, np.int32)}


def preference_example(tokenizer, record: dict, length: int, where: str = "record") -> dict | None:
    """Chosen and rejected token rows (prompt + completion) and their completion masks;
    None when either is longer than `length`. The mask covers the final assistant turn
    only, as TRL's DPO: a multi-turn prompt's earlier assistant turns (HH-RLHF) are the
    same in both rows, so they would cancel in the DPO margin but still count in RPO's
    NLL, IPO's length normalisation and the logged log-probs."""
    prompt = record["messages"]
    out = {}
    for side in ("chosen", "rejected"):
        ids, mask = tokenizer.encode_chat(prompt + [{"role": "assistant", "content": record[side]}],
                                          source=where, last_turn_only=True)
        if len(ids) > length:
            return None
        out[f"{side}_tokens"] = np.asarray(ids, np.int32)
        out[f"{side}_mask"] = np.asarray(mask, np.int32)
    return out
