"""Every loss the trainer can pick, in one module.

Inputs follow the data pipeline's features: `target_tokens[i]` is the token after
position i and `loss_weights[i]` says whether it is trained on (0 across document
boundaries and on prompt tokens). Preference losses take summed completion log-probs;
beta is applied exactly once (an old JAX DPO applied it twice).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def token_stats(logits, targets, mean: bool = False, alt_targets=None) -> dict:
    """Per-position statistics the losses need, in fp32: log p(target) `logp`, the
    log-partition `lse`, whether the target has the largest logit `correct`, (`mean`)
    the mean log-prob over the vocabulary `mean_logp` (label smoothing), and with
    `alt_targets` log p(alt target) `alt_logp` (prompt-shared rows score the rejected
    targets of their shared part from the same logits). [B, L, V] -> [B, L].

    `correct` compares the target's logit with the row max that logsumexp needs anyway,
    instead of an argmax (a second pass over the [B, L, V] logits: 130 ms of a SmolLM2
    step at 4 x 512 here); it differs from argmax only on exact ties, where it counts the
    target as correct."""
    logits = logits.astype(jnp.float32)
    return _stats_given(logits, jnp.max(logits, axis=-1), jax.nn.logsumexp(logits, axis=-1), targets, mean,
                        alt_targets)


def _stats_given(logits, top, lse, targets, mean, alt_targets=None):
    """token_stats from fp32 logits, their row max and log-partition."""
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    out = {"logp": picked - lse, "lse": lse,
           "correct": (picked >= top).astype(jnp.float32)}
    if alt_targets is not None:
        out["alt_logp"] = jnp.take_along_axis(logits, alt_targets[..., None], axis=-1)[..., 0] - lse
    if mean:
        out["mean_logp"] = jnp.mean(logits, axis=-1) - lse
    return out


def chunked_token_stats(hidden, head, targets, chunk: int, mean: bool = False, alt_targets=None) -> dict:
    """token_stats of head(hidden) computed `chunk` positions at a time: hidden [B, L, E],
    head [..., E] -> [..., V] fp32. Each chunk's logits are recomputed in the backward pass
    instead of kept, so the full [B, L, V] fp32 logits (400 MB for SmolLM2 at 4 x 512, and
    their gradient) never exist at once; the cost is one more head matmul per chunk."""
    b, n = targets.shape
    if chunk <= 0 or chunk >= n:
        return token_stats(head(hidden), targets, mean, alt_targets)
    pad = -n % chunk
    ts = (targets,) if alt_targets is None else (targets, alt_targets)
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        ts = tuple(jnp.pad(t, ((0, 0), (0, pad))) for t in ts)
    k = (n + pad) // chunk
    # chunks along the length axis, so the (sharded) batch axis stays where it is
    xs = (hidden.reshape(b, k, chunk, -1).swapaxes(0, 1),
          tuple(t.reshape(b, k, chunk).swapaxes(0, 1) for t in ts))

    @jax.checkpoint
    def one(args):
        h, t = args
        return token_stats(head(h), t[0], mean, *t[1:])

    out = jax.lax.map(one, xs)
    return {key: v.swapaxes(0, 1).reshape(b, n + pad)[:, :n] for key, v in out.items()}


def weighted_token_stats(hidden, head, head_params, targets, weights, chunk: int, mean: bool = False,
                         groups: int = 1, remat: bool = False, alt_targets=None, cast=None) -> dict:
    """token_stats of head(head_params, hidden) where weights != 0, zeros elsewhere, with
    the head applied only to chunks that hold a weighted position. SFT and DPO rows train
    on answers only (about 40% of the positions of the bundled instruction mixture), and
    the head is a fifth of a SmolLM2 step's FLOPs, so the prompt positions' logits are
    worth skipping.

    The rows are split into `groups` blocks (one per batch shard, so nothing moves between
    devices); within each block a stable sort moves the weighted positions to the front,
    the head + token_stats run `chunk` positions per block at a time (`head_chunk_stats`),
    skipping chunks with no weighted position in any block, and the stats go back to their
    positions. `remat` recomputes each chunk's logits in the backward pass instead of
    keeping them. `head` is a pure function head(params, x [..., E]) -> fp32 logits.
    `alt_targets` adds `alt_logp` (token_stats). `cast(params)`, when given, runs once per
    pass and its result (unless None) goes to every chunk as head(params, x, cast(params)):
    the weight in the compute dtype, which the chunks' conditionals would each cast again."""
    b, n = targets.shape
    if b % groups:
        raise ValueError(f"{b} rows do not split into {groups} batch groups")
    m = b // groups * n
    h = hidden.reshape(groups, m, hidden.shape[-1])
    live = (weights != 0).reshape(groups, m)
    order = jnp.argsort(~live, axis=1, stable=True)   # weighted positions first
    h = jnp.take_along_axis(h, order[..., None], axis=1)
    ts = (targets,) if alt_targets is None else (targets, alt_targets)
    ts = tuple(jnp.take_along_axis(t.reshape(groups, m), order, axis=1) for t in ts)
    live = jnp.take_along_axis(live, order, axis=1)
    chunk = max(1, min(int(chunk), m))
    pad = -m % chunk
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        ts = tuple(jnp.pad(t, ((0, 0), (0, pad))) for t in ts)
        live = jnp.pad(live, ((0, 0), (0, pad)))
    k = (m + pad) // chunk
    split = lambda x: x.reshape(groups, k, chunk, *x.shape[2:]).swapaxes(0, 1)  # noqa: E731
    out = head_chunk_stats(head, cast, mean, remat, head_params, split(h), tuple(map(split, ts)), split(live))
    back = jnp.argsort(order, axis=1)   # the inverse permutation
    unsort = lambda v: jnp.take_along_axis(v.swapaxes(0, 1).reshape(groups, m + pad)[:, :m], back, axis=1)  # noqa: E731
    return {key: jnp.where(weights != 0, unsort(v).reshape(b, n), 0.0) for key, v in out.items()}


# Up to this many head chunks per step run as straight-line code rather than a loop: a
# loop's kept per-chunk tensors go through stacks that XLA zero-fills, writes and slices
# again (on CPU ~0.2 s of a SmolLM2 step's op time for its 8 chunks of logits).
UNROLL_CHUNKS = 32


def _apply(head, params, x, prepared):
    return head(params, x) if prepared is None else head(params, x, prepared)


def _chunk_stats(head, mean, params, prepared, hc, tc, keep: bool):
    """token_stats of one chunk; with `keep` also what its backward pass needs instead of
    the logits: e = exp(logits - row max) and the per-row scale exp(max - lse), so that
    p = e * scale there without a second pass of exps (the softmax's exps are a large
    part of the head's non-matmul time on CPU). tc: (targets,) or (targets, alt targets)."""
    logits = _apply(head, params, hc, prepared).astype(jnp.float32)
    top = jnp.max(logits, axis=-1)
    if not keep:
        return _stats_given(logits, top, jax.nn.logsumexp(logits, axis=-1), tc[0], mean, *tc[1:])
    shift = jnp.where(jnp.isfinite(top), top, 0.0)
    # written out once, then summed: fused into the sum, XLA would compute the exps twice
    e = jax.lax.optimization_barrier(jnp.exp(logits - shift[..., None]))
    lse = shift + jnp.log(jnp.sum(e, axis=-1))
    return _stats_given(logits, top, lse, tc[0], mean, *tc[1:]), (e, jnp.exp(shift - lse))


def _over_chunks(body, carry, xs, k: int, kept=None):
    """lax.scan(body, carry, (xs, kept)) over k chunks, unrolled when k <= UNROLL_CHUNKS.
    `body` returns (carry, (y, z)): the ys come back stacked along a leading axis; the zs,
    and `kept` (or None), are per-chunk tensors kept for a later pass, stacked when scanned
    but a tuple of k trees when unrolled (no stack to fill). Returns (carry, ys, zs)."""
    if k > UNROLL_CHUNKS:
        carry, (ys, zs) = jax.lax.scan(body, carry, (xs, kept))
        return carry, ys, zs
    ys, zs = [], []
    for i in range(k):
        carry, (y, z) = body(carry, (jax.tree.map(lambda x, i=i: x[i], xs), None if kept is None else kept[i]))
        ys.append(y)
        zs.append(z)
    return carry, jax.tree.map(lambda *a: jnp.stack(a), *ys), tuple(zs)


def _map_live_chunks(head, cast, mean, params, hs, ts, lives, keep):
    """token_stats per chunk [k, ...] (and with `keep` what each chunk's backward needs,
    `_chunk_stats`), zeros for chunks without a live position, whose head never runs."""
    prepared = cast(params) if cast else None
    shapes = jax.eval_shape(functools.partial(_chunk_stats, head, mean, keep=keep), params, prepared, hs[0],
                            tuple(t[0] for t in ts))
    zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # noqa: E731

    def one(_, args):
        (hc, tc, lc), _ = args
        out = jax.lax.cond(jnp.any(lc), lambda: _chunk_stats(head, mean, params, prepared, hc, tc, keep), zeros)
        return None, (out if keep else (out, None))

    _, stats, kept = _over_chunks(one, None, (hs, ts, lives), hs.shape[0])
    return (stats, kept) if keep else stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def head_chunk_stats(head, cast, mean, remat, params, hs, ts, lives):
    """token_stats of head(params, hs[i]) for each chunk i ([k, ..., E] -> [k, ...]; `ts`
    the (targets,) or (targets, alt targets) per chunk), zeros where a chunk holds no live
    position. Its own backward pass, because autodiff of a
    `lax.cond` inside the chunk loop saved the head weight as a per-chunk residual: a
    [chunks, V, E] stack (906 MB and ~0.6 s of copies per SmolLM2 step at 4 x 512). Here
    the forward keeps only each chunk's softmax numerators (or nothing, with `remat`), the
    backward runs dlogits = p (dlse - dlogp - dalt - dmean) + onehot dlogp + onehot_alt dalt + dmean / V
    per live chunk and
    accumulates the head's parameter gradient."""
    return _map_live_chunks(head, cast, mean, params, hs, ts, lives, keep=False)


def _head_chunk_stats_fwd(head, cast, mean, remat, params, hs, ts, lives):
    out = _map_live_chunks(head, cast, mean, params, hs, ts, lives, keep=not remat)
    stats, kept = (out, None) if remat else out
    return stats, (params, hs, ts, lives, stats["lse"], kept)


def _head_chunk_stats_bwd(head, cast, mean, remat, res, ct):
    params, hs, ts, lives, lse, kept = res
    prepared = cast(params) if cast else None
    d_logp, d_lse = ct["logp"], ct["lse"]   # "correct" is a comparison: no gradient
    d_mean = ct["mean_logp"] if mean else jnp.zeros_like(lse)
    d_alt = ct["alt_logp"] if len(ts) > 1 else None

    def one(dparams, args):
        (hc, tc, lc, lse_c, dl, dz, dm, da), kept_c = args

        def live(dparams):
            # with kept exps the vjp's own forward product is unused, and XLA drops it
            recomputed, vjp = jax.vjp(lambda p, x: _apply(head, p, x, prepared), params, hc)
            if kept_c is None:
                lg = recomputed.astype(jnp.float32)
                p = jnp.exp(lg - lse_c[..., None])
            else:
                e, scale = kept_c
                p = e * scale[..., None]
            vocab = jax.lax.broadcasted_iota(jnp.int32, p.shape, p.ndim - 1)
            onehot = lambda t, d: jnp.where(vocab == t[..., None], d[..., None], 0.0)  # noqa: E731
            dlogits = (p * (dz - dl - dm)[..., None] + onehot(tc[0], dl) + (dm / p.shape[-1])[..., None])
            if da is not None:
                dlogits = dlogits - p * da[..., None] + onehot(tc[1], da)
            dp, dh = vjp(dlogits)
            return jax.tree.map(jnp.add, dparams, dp), dh

        dparams, dh = jax.lax.cond(jnp.any(lc), live, lambda dp: (dp, jnp.zeros_like(hc)), dparams)
        return dparams, (dh, None)

    dparams0 = jax.tree.map(jnp.zeros_like, params)
    dparams, dhs, _ = _over_chunks(one, dparams0, (hs, ts, lives, lse, d_logp, d_lse, d_mean, d_alt),
                                   hs.shape[0], kept)
    return dparams, dhs, None, None


head_chunk_stats.defvjp(_head_chunk_stats_fwd, _head_chunk_stats_bwd)


def token_logprobs(logits, targets):
    """log p(target) per position, in fp32: [B, L, V], [B, L] -> [B, L]."""
    return token_stats(logits, targets)["logp"]


def per_document_sums(x, segment_ids):
    """Sum of x [B, L] per (row, segment) document: a flat [B * (L + 1)] vector."""
    b, n = x.shape
    key = (jnp.arange(b)[:, None] * (n + 1) + segment_ids).reshape(-1)
    return jax.ops.segment_sum(x.reshape(-1), key, num_segments=b * (n + 1))


def cross_entropy(logits, targets, weights, **kw):
    """Masked next-token CE from logits [B, L, V]; see cross_entropy_from_stats."""
    stats = token_stats(logits, targets, mean=bool(kw.get("label_smoothing")))
    return cross_entropy_from_stats(stats, targets, weights, **kw)


def cross_entropy_from_stats(stats, targets, weights, *, z_loss: float = 0.0, label_smoothing: float = 0.0,
                             per_sequence: bool = False, segment_ids=None, normalizer=None,
                             token_normalizer=None):
    """Masked next-token CE from token_stats. Normalised by the number of target tokens
    (default) or as the mean over sequences of each sequence's token mean (a sequence is a
    packed document when `segment_ids` is given, else a row). `normalizer` replaces the
    local count (tokens, or non-empty sequences) and `token_normalizer` the token count
    of the metrics, so that micro-batches of one global batch sum to the global values
    exactly. Returns (loss, metrics)."""
    w = weights.astype(jnp.float32)
    lse, logp_target = stats["lse"], stats["logp"]
    nll = -logp_target
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * stats["mean_logp"]
    per_token = nll + (z_loss * jnp.square(lse) if z_loss else 0.0)
    n_tokens = jnp.sum(w)
    if per_sequence:
        seg = jnp.zeros_like(targets) if segment_ids is None else segment_ids
        seq_tokens = per_document_sums(w, seg)
        seq_sum = per_document_sums(per_token * w, seg)
        seq_mean = seq_sum / jnp.maximum(seq_tokens, 1.0)
        has = (seq_tokens > 0).astype(jnp.float32)
        denom = jnp.sum(has) if normalizer is None else normalizer
        loss = jnp.sum(seq_mean * has) / jnp.maximum(denom, 1.0)
    else:
        denom = n_tokens if normalizer is None else normalizer
        loss = jnp.sum(per_token * w) / jnp.maximum(denom, 1.0)
    tok_denom = jnp.maximum(n_tokens if token_normalizer is None else token_normalizer, 1.0)
    metrics = {"nll": jnp.sum(-logp_target * w) / tok_denom,
               "accuracy": jnp.sum(jax.lax.stop_gradient(stats["correct"]) * w) / tok_denom,
               "tokens": n_tokens}
    if z_loss:
        metrics["z_loss"] = jnp.sum(jnp.square(lse) * w) / tok_denom
    return loss, metrics


def slot_sums(x, segment_ids, slots: int):
    """Per-row sums of x [R, L] over each segment 1..slots: [R, slots] (segment 0, padding,
    is dropped). The prompt-shared rows' pairs are their segments."""
    one = lambda xr, sr: jax.ops.segment_sum(xr, sr, num_segments=slots + 1)[1:]  # noqa: E731
    return jax.vmap(one)(x, segment_ids)


def sequence_logps(logits, targets, weights):
    """Summed log-prob of the weighted (completion) tokens of each sequence: [B]."""
    return jnp.sum(token_logprobs(logits, targets) * weights.astype(jnp.float32), axis=-1)


PREFERENCE_LOSSES = ("dpo", "ipo", "rpo")


def preference_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
                    kind: str = "dpo", beta: float = 0.1, label_smoothing: float = 0.0,
                    chosen_tokens=None, rejected_tokens=None, chosen_nll=None, alpha: float = 1.0,
                    normalizer=None, mask=None):
    """DPO (sigmoid, optional conservative label smoothing), IPO (length-normalised, as
    TRL), RPO = DPO + alpha * token-mean NLL of the chosen completions (`chosen_nll`).
    Means are over pairs (the entries where `mask` is 1, all without one), or sums divided
    by `normalizer` (the global pair count when this is one micro-batch). Returns (loss,
    metrics) with TRL's metric names."""
    if kind not in PREFERENCE_LOSSES:
        raise ValueError(f"unknown preference loss {kind!r}; choose one of {PREFERENCE_LOSSES}")
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    if kind == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("IPO needs the completion token counts")
        delta = (chosen_ratio / jnp.maximum(chosen_tokens, 1.0)
                 - rejected_ratio / jnp.maximum(rejected_tokens, 1.0))
        per_pair = jnp.square(delta - 1.0 / (2.0 * beta))
    else:
        z = beta * (chosen_ratio - rejected_ratio)
        per_pair = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
    m = jnp.ones_like(chosen_logps) if mask is None else mask.astype(jnp.float32)
    n = jnp.sum(m) if normalizer is None else normalizer
    mean = lambda x: jnp.sum(x * m) / n  # noqa: E731
    loss = mean(per_pair)
    metrics = {}
    if kind == "rpo":
        if chosen_nll is None:
            raise ValueError("RPO needs the NLL of the chosen completions")
        metrics["nll_loss"] = chosen_nll
        loss = loss + alpha * chosen_nll
    chosen_rewards, rejected_rewards = beta * chosen_ratio, beta * rejected_ratio
    metrics.update({
        "rewards/chosen": mean(chosen_rewards),
        "rewards/rejected": mean(rejected_rewards),
        "rewards/accuracies": mean((chosen_rewards > rejected_rewards).astype(jnp.float32)),
        "rewards/margins": mean(chosen_rewards - rejected_rewards),
        "logps/chosen": mean(chosen_logps),
        "logps/rejected": mean(rejected_logps),
    })
    return loss, metrics
