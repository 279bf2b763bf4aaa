"""Train state and the jitted train step, one for every loss.

The step takes a global batch, splits it into `grad_accum` micro-batches and scans over
them; every loss is normalised by counts taken from the whole batch first, so the
accumulated gradient equals the gradient of one big batch exactly. It runs under
`jax.jit` with in/out shardings from the logical rules and a donated state.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct
from jax.sharding import NamedSharding, PartitionSpec as P

from findap_jax import defaults
from findap_jax.parallel.sharding import batch_shards, constrain
from findap_jax.train.losses import (chunked_token_stats, cross_entropy_from_stats, per_document_sums,
                                     preference_loss, slot_sums, weighted_token_stats)
from findap_jax.train.shared_prompt import pair_side

LM_LOSSES = ("lm",)
PREF_LOSSES = ("dpo", "ipo", "rpo")
_HEAD_DEFAULTS = ml_collections.ConfigDict({k: defaults.train_config()[k] for k in ("ce_chunk", "head_chunk")})


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def split_model(model):
    """(graphdef, params, rest): params are trained, rest (if any) is carried unchanged."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest


def merge_model(graphdef, params, rest=None):
    """The model back from split_model's parts (rest may be omitted when it is empty)."""
    return nnx.merge(graphdef, params) if rest is None else nnx.merge(graphdef, params, rest)


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(("data", "fsdp")))


def normalizers(batch, kind: str) -> dict:
    if kind in LM_LOSSES:
        w = batch["loss_weights"].astype(jnp.float32)
        return {"tokens": jnp.sum(w)}
    w = pair_side(batch, "chosen", "loss_weights")
    pairs = (jnp.sum(batch["shared_pair_mask"].astype(jnp.float32)) if "shared_pair_mask" in batch
             else jnp.asarray(w.shape[0], jnp.float32))
    return {"pairs": pairs, "chosen_tokens": jnp.sum(w.astype(jnp.float32))}


def _sequence_count(batch):
    """Number of (row, segment) documents with at least one target token."""
    per = per_document_sums((batch["loss_weights"] > 0).astype(jnp.float32), batch["segment_ids"])
    return jnp.sum(per > 0).astype(jnp.float32)


def _stats(model, tokens, positions, segment_ids, targets, weights, tc, mean=False, branch_ids=None,
           alt_targets=None):
    """Per-token log-probs etc. of the targets (and `alt_targets`) where `weights` != 0
    (anything elsewhere): the head on weighted positions only, train.head_chunk per batch
    shard at a time, or on every position, train.ce_chunk per row at a time (0: all at once)."""
    h, _ = model.hidden_states(tokens, positions=positions, segment_ids=segment_ids, branch_ids=branch_ids)
    project, rules = model.head_fn(), model.rules
    head = lambda w, x, w_cast=None: constrain(project(w, x, w_cast=w_cast), ("batch", "length", "act_vocab"),  # noqa: E731
                                               rules)
    ce_chunk, head_chunk = int(tc.ce_chunk), int(tc.head_chunk)
    if head_chunk <= 0:
        w = model.head_weight()
        return chunked_token_stats(h, lambda x: head(w, x), targets, ce_chunk, mean, alt_targets)
    groups = batch_shards(targets.shape[0], model.rules)
    rows = targets.shape[0] // groups
    chunk = ce_chunk * rows if ce_chunk > 0 else head_chunk
    return weighted_token_stats(h, head, model.head_weight(), targets, weights, chunk, mean, groups,
                                remat=ce_chunk > 0, alt_targets=alt_targets, cast=model.head_cast)


def lm_loss(model, mb, norms, tc):
    stats = _stats(model, mb["input_tokens"], mb["positions"], mb["segment_ids"], mb["target_tokens"],
                   mb["loss_weights"], tc, mean=bool(tc.label_smoothing))
    return cross_entropy_from_stats(stats, mb["target_tokens"], mb["loss_weights"], z_loss=tc.z_loss,
                                    label_smoothing=tc.label_smoothing, per_sequence=tc.per_sequence,
                                    segment_ids=mb["segment_ids"],
                                    normalizer=norms["sequences"] if tc.per_sequence else norms["tokens"],
                                    token_normalizer=norms["tokens"])


def pair_logps(model, mb, tc=None):
    """Per-token log-probs of chosen and rejected rows in one forward, zero off the
    completions: ([B, L], [B, L]). `tc` (train config) picks the head chunking. A batch
    of prompt-shared rows (`shared_prompt.share_prompts`) runs its rows once, and the
    shared part's positions score the rejected targets as well (`alt_logp`)."""
    tc = tc or _HEAD_DEFAULTS
    if "shared_input_tokens" in mb:
        sh = lambda k: mb[f"shared_{k}"]  # noqa: E731
        wc, wr = sh("chosen_loss_weights"), sh("rejected_loss_weights")
        stats = _stats(model, sh("input_tokens"), sh("positions"), sh("segment_ids"), sh("target_tokens"),
                       wc + wr, tc, branch_ids=sh("branch_ids"), alt_targets=sh("rejected_target_tokens"))
        rejected = jnp.where(sh("branch_ids") == 0, stats["alt_logp"], stats["logp"])
        return stats["logp"] * wc.astype(jnp.float32), rejected * wr.astype(jnp.float32)
    cat = lambda k: jnp.concatenate([mb[f"chosen_{k}"], mb[f"rejected_{k}"]], axis=0)  # noqa: E731
    w = cat("loss_weights")
    stats = _stats(model, cat("input_tokens"), cat("positions"), cat("segment_ids"), cat("target_tokens"), w, tc)
    lp = stats["logp"] * w.astype(jnp.float32)
    b = mb["chosen_input_tokens"].shape[0]
    return lp[:b], lp[b:]


def pair_sums(mb, per_token):
    """Per-pair sums of per-token values ([B, L] for separate rows) and the pair mask: [B] and
    None for separate rows; for prompt-shared rows [R, L] -> the [R * B] (row, slot) sums
    of each row's segments (`share_prompts`) and `shared_pair_mask` flattened alike."""
    if "shared_pair_mask" not in mb:
        return jnp.sum(per_token, -1), None
    mask = mb["shared_pair_mask"]
    return slot_sums(per_token, mb["shared_segment_ids"], mask.shape[1]).reshape(-1), mask.reshape(-1)


def pref_loss(model, mb, norms, tc, ref_model=None):
    chosen_lp, rejected_lp = pair_logps(model, mb, tc)
    sums = lambda x: pair_sums(mb, x)[0]  # noqa: E731
    if "ref_chosen_logps" in mb:
        ref_c, ref_r = mb["ref_chosen_logps"].reshape(-1), mb["ref_rejected_logps"].reshape(-1)
    else:
        rc, rr = pair_logps(ref_model, mb, tc)
        ref_c, ref_r = jax.lax.stop_gradient(sums(rc)), jax.lax.stop_gradient(sums(rr))
    weights = lambda side: pair_side(mb, side, "loss_weights").astype(jnp.float32)  # noqa: E731
    chosen, mask = pair_sums(mb, chosen_lp)
    return preference_loss(
        chosen, sums(rejected_lp), ref_c, ref_r, kind=tc.loss, beta=tc.beta,
        label_smoothing=tc.label_smoothing,
        chosen_tokens=sums(weights("chosen")), rejected_tokens=sums(weights("rejected")),
        chosen_nll=-jnp.sum(chosen_lp) / jnp.maximum(norms["chosen_tokens"], 1.0),
        alpha=tc.alpha, normalizer=norms["pairs"], mask=mask)


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule, tc, rest=None):
    """Returns step(state, batch, ref_params=None) -> (state, metrics), not yet jitted."""
    if tc.loss not in LM_LOSSES + PREF_LOSSES:
        raise ValueError(f"train.loss={tc.loss!r}: choose one of {LM_LOSSES + PREF_LOSSES}")
    accum = int(tc.grad_accum)

    def loss_fn(params, mb, norms, ref_params):
        model = merge_model(graphdef, params, rest)
        if tc.loss in LM_LOSSES:
            return lm_loss(model, mb, norms, tc)
        ref = None if ref_params is None else merge_model(graphdef, ref_params, rest)
        return pref_loss(model, mb, norms, tc, ref)

    def step(state: TrainState, batch, ref_params=None):
        norms = normalizers(batch, tc.loss)
        if tc.loss in LM_LOSSES and tc.per_sequence:
            norms["sequences"] = _sequence_count(batch)
        lead = next(iter(batch.values())).shape[0]
        if lead % accum:
            raise ValueError(f"batch of {lead} rows does not split into grad_accum={accum}")
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def micro_step(mb):
            (loss, metrics), g = grad_fn(state.params, mb, norms, ref_params)
            return g, dict(metrics, loss=loss)

        def body(carry, mb):
            g, m = micro_step(mb)
            return jax.tree.map(jnp.add, carry, (g, m)), None

        if accum == 1:   # no zero-filled accumulators to write and add to
            grads, metrics = micro_step(batch)
        else:
            micro = jax.tree.map(lambda x: x.reshape(accum, lead // accum, *x.shape[1:]), batch)
            shapes = jax.eval_shape(micro_step, jax.tree.map(lambda x: x[0], micro))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            (grads, metrics), _ = jax.lax.scan(body, zeros, micro)
        gnorm = optax.global_norm(grads)
        finite = jnp.isfinite(gnorm) & jnp.isfinite(metrics["loss"])

        def apply(_):
            updates, new_opt = tx.update(grads, state.opt_state, state.params)
            return TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=new_opt)

        # A non-finite loss or gradient leaves the state untouched (the trainer counts it);
        # a cond, not a select over every parameter and moment, so a good step costs nothing extra.
        new_state = jax.lax.cond(finite, apply, lambda _: state, None)
        metrics.update(grad_norm=gnorm, lr=schedule(state.step), finite=finite.astype(jnp.float32))
        return new_state, metrics

    return step


def init_state(params, tx) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def init_sharded_state(params, tx, mesh, param_shardings) -> tuple[TrainState, Any]:
    """A fresh state on the mesh: params by logical axes, optimizer moments like their
    params (XLA propagates it through tx.init), step replicated. Returns (state, shardings)."""
    params = jax.device_put(params, param_shardings)
    replicated = NamedSharding(mesh, P())
    opt_state = jax.tree.map(  # scalars (Adam's count) come out on one device: replicate them
        lambda x: x if isinstance(x.sharding, NamedSharding) else jax.device_put(x, replicated),
        jax.jit(tx.init)(params))
    step = jax.device_put(jnp.zeros((), jnp.int32), replicated)
    placed = TrainState(step=step, params=params, opt_state=opt_state)
    return placed, jax.tree.map(lambda x: x.sharding, placed)
