"""Every loss the trainer can pick, in one module.

Inputs follow the data pipeline's features: `target_tokens[i]` is the token after
position i and `loss_weights[i]` says whether it is trained on (0 across document
boundaries and on prompt tokens). Preference losses take summed completion log-probs;
beta is applied exactly once (an old JAX DPO applied it twice).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits, targets):
    """log p(target) per position, in fp32: [B, L, V], [B, L] -> [B, L]."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - lse


def cross_entropy(logits, targets, weights, *, z_loss: float = 0.0, label_smoothing: float = 0.0,
                  per_sequence: bool = False):
    """Masked next-token CE. Normalised by the number of target tokens (default) or as
    the mean over sequences of each sequence's token mean. Returns (loss, metrics)."""
    logits = logits.astype(jnp.float32)
    w = weights.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    logp_target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - lse
    nll = -logp_target
    if label_smoothing:
        mean_logp = jnp.mean(logits, axis=-1) - lse
        nll = (1.0 - label_smoothing) * nll - label_smoothing * mean_logp
    per_token = nll + (z_loss * jnp.square(lse) if z_loss else 0.0)
    n_tokens = jnp.sum(w)
    if per_sequence:
        seq_tokens = jnp.sum(w, axis=-1)
        seq_mean = jnp.sum(per_token * w, axis=-1) / jnp.maximum(seq_tokens, 1.0)
        has = (seq_tokens > 0).astype(jnp.float32)
        loss = jnp.sum(seq_mean * has) / jnp.maximum(jnp.sum(has), 1.0)
    else:
        loss = jnp.sum(per_token * w) / jnp.maximum(n_tokens, 1.0)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    metrics = {"nll": jnp.sum(-logp_target * w) / jnp.maximum(n_tokens, 1.0),
               "accuracy": jnp.sum(correct * w) / jnp.maximum(n_tokens, 1.0),
               "tokens": n_tokens}
    if z_loss:
        metrics["z_loss"] = jnp.sum(jnp.square(lse) * w) / jnp.maximum(n_tokens, 1.0)
    return loss, metrics


def sequence_logps(logits, targets, weights):
    """Summed log-prob of the weighted (completion) tokens of each sequence: [B]."""
    return jnp.sum(token_logprobs(logits, targets) * weights.astype(jnp.float32), axis=-1)


PREFERENCE_LOSSES = ("dpo", "ipo", "rpo")


def preference_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
                    kind: str = "dpo", beta: float = 0.1, label_smoothing: float = 0.0,
                    chosen_tokens=None, rejected_tokens=None, chosen_nll=None, alpha: float = 1.0):
    """DPO (sigmoid, optional conservative label smoothing), IPO (length-normalised, as
    TRL), RPO = DPO + alpha * token-mean NLL of the chosen completions (`chosen_nll`).
    Returns (loss, metrics) with TRL's metric names."""
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
    loss = jnp.mean(per_pair)
    metrics = {}
    if kind == "rpo":
        if chosen_nll is None:
            raise ValueError("RPO needs the NLL of the chosen completions")
        metrics["nll_loss"] = chosen_nll
        loss = loss + alpha * chosen_nll
    chosen_rewards, rejected_rewards = beta * chosen_ratio, beta * rejected_ratio
    metrics.update({
        "rewards/chosen": jnp.mean(chosen_rewards),
        "rewards/rejected": jnp.mean(rejected_rewards),
        "rewards/accuracies": jnp.mean((chosen_rewards > rejected_rewards).astype(jnp.float32)),
        "rewards/margins": jnp.mean(chosen_rewards - rejected_rewards),
        "logps/chosen": jnp.mean(chosen_logps),
        "logps/rejected": jnp.mean(rejected_logps),
    })
    return loss, metrics
