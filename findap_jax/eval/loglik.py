"""Packed log-likelihood scoring of (context, continuation) requests.

Requests are turned into token sequences (context + continuation minus its last token);
sequences that are a prefix of another with the same context are scored inside it (all
single-token choices of a question cost one sequence), and the rest are packed many to a
row with segment ids, so attention never crosses sequences. Only the positions that
predict continuation tokens go through the output head. Rows are sharded over the
('data', 'fsdp') mesh axes; results come back replicated so every host can read them.
"""
from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from findap_jax.generation.sampler import bucket


@dataclasses.dataclass(frozen=True)
class Scored:
    logprob: float      # sum of log p(continuation tokens | context)
    n_tokens: int
    greedy: bool        # every continuation token is the argmax


def encode_pair(tokenizer, context: str, continuation: str, add_bos: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, split the way lm-evaluation-harness does:
    trailing whitespace of the context moves to the continuation, the whole string is
    encoded once and the continuation is what follows the context's tokens."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx = tokenizer.encode(context, add_bos=add_bos)
    whole = tokenizer.encode(context + continuation, add_bos=add_bos)
    cont = whole[len(ctx):]
    if not ctx or not cont:
        raise ValueError(f"empty {'context' if not ctx else 'continuation'} after tokenisation: "
                         f"{(context + continuation)[-80:]!r}")
    return ctx, cont


@dataclasses.dataclass
class _Plan:
    rows: list            # per row: [(sequence tokens, segment offset)]
    queries: list         # per row: [(position in row, target token, request index)]


def plan(requests: Sequence[tuple[Sequence[int], Sequence[int]]], row_len: int,
         max_len: int) -> tuple[_Plan, int]:
    """Dedupe shared prefixes and pack sequences into rows of `row_len` tokens (first fit,
    longest first); a longer sequence gets a row of its own. Contexts are left-truncated
    to `max_len`; returns the plan and how many were."""
    truncated = 0
    seqs_by_ctx: dict[tuple, list[tuple[int, tuple]]] = defaultdict(list)
    for i, (ctx, cont) in enumerate(requests):
        if len(cont) >= max_len:
            raise ValueError(f"request {i}: continuation of {len(cont)} tokens leaves no room for "
                             f"context in max_len {max_len}")
        ctx = tuple(ctx)
        room = max_len - len(cont) + 1
        if len(ctx) > room:
            ctx, truncated = ctx[-room:], truncated + 1
        seqs_by_ctx[ctx].append((i, ctx + tuple(cont[:-1])))
    seqs: list[tuple] = []
    owner: dict[int, tuple[int, int]] = {}          # request -> (sequence index, context length)
    for ctx, items in seqs_by_ctx.items():
        kept: list[tuple] = []
        for _, s in sorted(items, key=lambda it: -len(it[1])):
            if not any(k[:len(s)] == s for k in kept):
                kept.append(s)
        base = len(seqs)
        seqs += kept
        for i, s in items:
            j = next(j for j, k in enumerate(kept) if k[:len(s)] == s)
            owner[i] = (base + j, len(ctx))
    order = sorted(range(len(seqs)), key=lambda j: -len(seqs[j]))
    free: list[int] = []
    where: dict[int, tuple[int, int]] = {}            # sequence -> (row, offset)
    rows: list[list] = []
    for j in order:
        n = len(seqs[j])
        r = next((r for r, f in enumerate(free) if f >= n), None)
        if r is None:
            rows.append([])
            free.append(max(row_len, n))
            r = len(rows) - 1
        off = sum(len(t) for t, _ in rows[r])
        where[j] = (r, off)
        rows[r].append((seqs[j], off))
        free[r] -= n
    queries: list[list] = [[] for _ in rows]
    for i, (_, cont) in enumerate(requests):
        j, clen = owner[i]
        r, off = where[j]
        for t, tok in enumerate(cont):
            queries[r].append((off + clen - 1 + t, int(tok), i))
    return _Plan(rows, queries), truncated


@functools.lru_cache(maxsize=8)
def _compiled(graphdef, out_sharding):
    def fn(state, ids, positions, segs, q_pos, q_tok):
        model = nnx.merge(graphdef, state)
        h, _ = model.hidden_states(ids, positions, segs)
        hq = jnp.take_along_axis(h, q_pos[..., None], axis=1)
        logits = model.head(hq)
        lp = jnp.take_along_axis(logits, q_tok[..., None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, -1)
        return lp, jnp.argmax(logits, axis=-1) == q_tok
    return jax.jit(fn, out_shardings=out_sharding)


def _put(x: np.ndarray, sharding):
    if sharding is None:
        return jnp.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def score(model, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *, row_len: int = 512,
          rows_per_batch: int = 8, max_len: int | None = None, mesh=None) -> tuple[list[Scored], dict]:
    """Score every (context ids, continuation ids) request; returns results in request
    order and stats {rows, truncated}. `max_len` defaults to the model's context size."""
    if not requests:
        return [], {"rows": 0, "truncated": 0}
    pl, truncated = plan(requests, row_len, max_len or model.cfg.max_position_embeddings)
    dp = 1
    in_sh = out_sh = None
    if mesh is not None:
        dp = mesh.shape["data"] * mesh.shape["fsdp"]
        in_sh, out_sh = NamedSharding(mesh, P(("data", "fsdp"))), NamedSharding(mesh, P())
    rows_per_batch = bucket(rows_per_batch, dp)
    graphdef, state = nnx.split(model)
    fn = _compiled(graphdef, out_sh)
    lp_sum = np.zeros(len(requests), np.float64)
    n_tok = np.zeros(len(requests), np.int64)
    greedy = np.ones(len(requests), bool)
    for start in range(0, len(pl.rows), rows_per_batch):
        rows = pl.rows[start:start + rows_per_batch]
        qs = pl.queries[start:start + rows_per_batch]
        nq = bucket(max(len(q) for q in qs), 8)
        seq_len = bucket(max(off + len(s) for row in rows for s, off in row), 64)
        ids = np.zeros((rows_per_batch, seq_len), np.int32)
        pos = np.zeros_like(ids)
        segs = np.zeros_like(ids)
        q_pos = np.zeros((rows_per_batch, nq), np.int32)
        q_tok = np.zeros_like(q_pos)
        for b, row in enumerate(rows):
            for k, (s, off) in enumerate(row):
                ids[b, off:off + len(s)] = s
                pos[b, off:off + len(s)] = np.arange(len(s))
                segs[b, off:off + len(s)] = k + 1
            for q, (p, tok, _) in enumerate(qs[b]):
                q_pos[b, q], q_tok[b, q] = p, tok
        lp, hit = fn(state, *(_put(a, in_sh) for a in (ids, pos, segs, q_pos, q_tok)))
        lp, hit = np.asarray(lp), np.asarray(hit)
        for b in range(len(rows)):
            for q, (_, _, i) in enumerate(qs[b]):
                lp_sum[i] += lp[b, q]
                n_tok[i] += 1
                greedy[i] &= bool(hit[b, q])
    out = [Scored(float(lp_sum[i]), int(n_tok[i]), bool(greedy[i])) for i in range(len(requests))]
    return out, {"rows": len(pl.rows), "truncated": truncated}
