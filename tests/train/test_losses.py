"""Losses against TRL's DPOTrainer loss code (same log-probs; same tiny model through
transformers) and against direct formulas."""
import collections
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from findap_jax.checkpoints.hf import load_hf
from findap_jax.model.llama import project_head
from findap_jax.train import losses
from findap_jax.train.losses import (chunked_token_stats, cross_entropy, preference_loss, sequence_logps,
                                     token_logprobs, token_stats, weighted_token_stats)
from tests.helpers import save_random_hf_llama

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")


def trl_loss(per_token_logps, completion_mask, ref_chosen, ref_rejected, loss_types, beta,
             loss_weights=None):
    """Run TRL's own DPOTrainer._compute_loss with a stand-in model that returns the given
    per-token log-probs (HF shift: position t scores token t+1)."""
    import torch
    from trl import DPOTrainer

    lp = torch.as_tensor(np.asarray(per_token_logps), dtype=torch.float32)
    cm = torch.as_tensor(np.asarray(completion_mask), dtype=torch.long)

    class StandIn(torch.nn.Module):
        training = True

        def forward(self, input_ids, attention_mask=None, labels=None, **kw):
            shift = (labels[:, 1:] != -100).float()
            b, n = shift.shape
            return types.SimpleNamespace(log_probs=lp * shift, entropy=torch.zeros(b, n),
                                         mean_logits=torch.zeros(b, n),
                                         is_top1=torch.zeros(b, n, dtype=torch.bool))

    acc = types.SimpleNamespace(device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x)
    fake = types.SimpleNamespace(
        model=StandIn(), accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, ref_model=None, f_divergence_type="reverse_kl",
        f_alpha_divergence_coef=1.0, loss_types=loss_types, loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta, label_smoothing=0.0, use_weighting=False, args=None, router_aux_loss_coef=0.0,
        _metrics={"train": collections.defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    ids = torch.zeros(cm.shape, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": cm,
              "ref_chosen_logps": torch.as_tensor(np.asarray(ref_chosen), dtype=torch.float32),
              "ref_rejected_logps": torch.as_tensor(np.asarray(ref_rejected), dtype=torch.float32)}
    loss = DPOTrainer._compute_loss(fake, fake.model, inputs, return_outputs=False)
    return float(loss), {k: fake._metrics["train"][k][-1] for k in METRICS}


def ours(per_token_logps, completion_mask, ref_c, ref_r, kind, beta, alpha=1.0):
    w = jnp.asarray(completion_mask[:, 1:], jnp.float32)
    seq = jnp.sum(jnp.asarray(per_token_logps) * w, axis=1)
    b = len(seq) // 2
    nll = -jnp.sum(jnp.asarray(per_token_logps[:b]) * w[:b]) / jnp.sum(w[:b])
    toks = jnp.sum(w, axis=1)
    return preference_loss(seq[:b], seq[b:], jnp.asarray(ref_c), jnp.asarray(ref_r), kind=kind, beta=beta,
                           chosen_tokens=toks[:b], rejected_tokens=toks[b:], chosen_nll=nll, alpha=alpha)


def _random_batch(seed, b=4, n=12):
    rng = np.random.default_rng(seed)
    logps = -rng.gamma(2.0, 1.0, (2 * b, n - 1))
    mask = np.zeros((2 * b, n), np.int64)
    for i in range(2 * b):
        start = rng.integers(2, 6)
        mask[i, start:rng.integers(start + 2, n + 1)] = 1
    return logps, mask, -rng.gamma(5.0, 2.0, b), -rng.gamma(5.0, 2.0, b)


@pytest.mark.parametrize("kind,trl_types,weights", [("dpo", ["sigmoid"], None), ("ipo", ["ipo"], None),
                                                    ("rpo", ["sigmoid", "sft"], [1.0, 0.7])])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_preference_losses_equal_trl_on_same_logps(kind, trl_types, weights, beta):
    logps, mask, ref_c, ref_r = _random_batch(int(beta * 10))
    ref_loss, ref_metrics = trl_loss(logps, mask, ref_c, ref_r, trl_types, beta, weights)
    loss, metrics = ours(logps, mask, ref_c, ref_r, kind, beta, alpha=(weights or [1, 1])[-1])
    assert abs(float(loss) - ref_loss) <= 1e-5
    for k in METRICS:
        assert abs(float(metrics[k]) - ref_metrics[k]) <= 1e-5, k


def test_dpo_on_tiny_model_through_transformers_equals_trl(tmp_path):
    """Same tiny Llama: log-probs from transformers into TRL's loss vs our model + loss."""
    import torch

    ref_model = save_random_hf_llama(tmp_path, "gqa_untied")
    model = load_hf(tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 97, (4, 10))
    mask = np.zeros((4, 10), np.int64)
    mask[:, 4:] = 1
    mask[1, 8:] = 0
    with torch.no_grad():
        logits = ref_model(torch.as_tensor(ids)).logits
    hf_lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, torch.as_tensor(ids[:, 1:, None]))[..., 0].numpy()
    ref_c, ref_r = np.array([-20.0, -25.0]), np.array([-22.0, -21.0])
    ref_loss, ref_metrics = trl_loss(hf_lp, mask, ref_c, ref_r, ["sigmoid"], 0.1)
    seq = sequence_logps(model(jnp.asarray(ids))[:, :-1], jnp.asarray(ids[:, 1:]), jnp.asarray(mask[:, 1:]))
    loss, metrics = preference_loss(seq[:2], seq[2:], ref_c, ref_r, kind="dpo", beta=0.1)
    assert abs(float(loss) - ref_loss) <= 1e-5
    for k in METRICS:
        assert abs(float(metrics[k]) - ref_metrics[k]) <= 1e-4, k


def test_cross_entropy_against_direct_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (2, 5))
    w = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 1, 1]], np.float32)
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(lp, targets[..., None], -1)[..., 0]
    loss, m = cross_entropy(logits, targets, w)
    np.testing.assert_allclose(float(loss), (nll * w).sum() / w.sum(), rtol=1e-6)
    per_seq, _ = cross_entropy(logits, targets, w, per_sequence=True)
    np.testing.assert_allclose(float(per_seq), np.mean([(nll[i] * w[i]).sum() / w[i].sum() for i in range(2)]),
                               rtol=1e-6)
    smooth, _ = cross_entropy(logits, targets, w, label_smoothing=0.1)
    want = ((0.9 * nll - 0.1 * lp.mean(-1)) * w).sum() / w.sum()
    np.testing.assert_allclose(float(smooth), want, rtol=1e-6)
    zl, mz = cross_entropy(logits, targets, w, z_loss=1e-2)
    lse = np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(float(zl), ((nll + 1e-2 * lse ** 2) * w).sum() / w.sum(), rtol=1e-6)
    assert float(m["tokens"]) == 5.0
    np.testing.assert_allclose(np.asarray(token_logprobs(logits, targets)), -nll, atol=1e-6)
    targets[0, :2] = logits[0, :2].argmax(-1)      # some hits, so accuracy is not trivially 0
    _, m = cross_entropy(logits, targets, w)
    hit = logits.argmax(-1) == targets
    np.testing.assert_allclose(float(m["accuracy"]), (hit * w).sum() / w.sum(), rtol=1e-6)


def test_correct_counts_a_tied_maximum_as_a_hit():
    logits = np.array([[[1.0, 3.0, 3.0, 0.0]]], np.float32)   # argmax says 1; 2 ties with it
    got = token_stats(logits, np.array([[2]]))["correct"]
    assert float(got[0, 0]) == 1.0
    assert float(token_stats(logits, np.array([[0]]))["correct"][0, 0]) == 0.0


def test_label_smoothing_is_conservative_dpo():
    z = 0.1 * (np.array([2.0]) - np.array([-1.0]))
    loss, _ = preference_loss(jnp.array([2.0]), jnp.array([-1.0]), jnp.array([0.0]), jnp.array([0.0]),
                              beta=0.1, label_smoothing=0.2)
    want = -0.8 * np.log(1 / (1 + np.exp(-z))) - 0.2 * np.log(1 / (1 + np.exp(z)))
    np.testing.assert_allclose(float(loss), want[0], rtol=1e-6)


def test_chunked_token_stats_equal_whole_logits_with_grads():
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(2, 11, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 32)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 32, (2, 11)))
    whole = token_stats(h @ w, t, mean=True)
    for chunk in (1, 4, 11, 0):
        part = chunked_token_stats(h, lambda x: x @ w, t, chunk, mean=True)
        for k in whole:
            np.testing.assert_allclose(part[k], whole[k], atol=1e-5)

    def loss(h, w, chunk):
        s = chunked_token_stats(h, lambda x: x @ w, t, chunk, mean=True)
        return jnp.sum(s["logp"] * 0.7 + s["lse"] ** 2 * 0.1 - s["mean_logp"])
    for a, b in zip(jax.grad(loss, (0, 1))(h, w, 4), jax.grad(loss, (0, 1))(h, w, 0)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("scanned", [False, True])
@pytest.mark.parametrize("groups,chunk,remat", [(1, 5, False), (2, 7, True), (4, 96, False), (4, 3, True)])
def test_weighted_token_stats_equal_whole_logits_where_weighted(groups, chunk, remat, scanned, monkeypatch):
    """The head on loss-weighted positions only: same stats there (zeros elsewhere) and the
    same gradients of a weighted loss as full logits, for any grouping/chunking, with the
    chunks unrolled (up to losses.UNROLL_CHUNKS) or in a loop."""
    if scanned:
        monkeypatch.setattr(losses, "UNROLL_CHUNKS", 0)
    rng = np.random.default_rng(1)
    b, n, e, v = 4, 24, 8, 32
    h = jnp.asarray(rng.normal(size=(b, n, e)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(e, v)), jnp.float32)
    t = jnp.asarray(rng.integers(0, v, (b, n)))
    wt = jnp.asarray(rng.random((b, n)) < 0.3, jnp.float32)

    def loss(h, w, fn):
        s = fn(h, w)
        return jnp.sum((s["logp"] + 0.1 * s["lse"] ** 2 - 0.3 * s["mean_logp"]) * wt), s

    whole = lambda h, w: token_stats(h @ w, t, mean=True)  # noqa: E731
    part = lambda h, w: weighted_token_stats(h, lambda w, x: x @ w, w, t, wt, chunk, True, groups, remat)  # noqa: E731
    (l0, s0), g0 = jax.value_and_grad(loss, (0, 1), has_aux=True)(h, w, whole)
    (l1, s1), g1 = jax.value_and_grad(loss, (0, 1), has_aux=True)(h, w, part)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for k in s0:
        np.testing.assert_allclose(s1[k] * wt, s0[k] * wt, atol=1e-5)
        assert np.all(np.asarray(s1[k])[np.asarray(wt) == 0] == 0), k
    for a, c in zip(g1, g0):
        np.testing.assert_allclose(a, c, atol=1e-5)


@pytest.mark.parametrize("how", ["whole", "chunked", "weighted", "weighted_remat", "weighted_scanned"])
def test_alt_targets_score_a_second_target_from_the_same_logits(how, monkeypatch):
    """`alt_logp` (a prompt-shared row's rejected targets) equals log p(alt target) of the
    same logits, and a loss on logp, alt_logp and lse has the full-logits gradients
    (1e-5), through every head path (the weighted one has its own backward pass)."""
    if how == "weighted_scanned":
        monkeypatch.setattr(losses, "UNROLL_CHUNKS", 0)
    rng = np.random.default_rng(3)
    b, n, e, v = 4, 12, 8, 32
    h = jnp.asarray(rng.normal(size=(b, n, e)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(e, v)), jnp.float32)
    t, alt = (jnp.asarray(rng.integers(0, v, (b, n))) for _ in range(2))
    wt = jnp.asarray(rng.random((b, n)) < 0.4, jnp.float32)
    ca, cb = (jnp.asarray(rng.normal(size=(b, n)), jnp.float32) for _ in range(2))
    fns = {"whole": lambda h, w: token_stats(h @ w, t, alt_targets=alt),
           "chunked": lambda h, w: chunked_token_stats(h, lambda x: x @ w, t, 5, alt_targets=alt),
           "weighted": lambda h, w: weighted_token_stats(h, lambda w, x: x @ w, w, t, wt, 5, groups=2,
                                                         alt_targets=alt),
           "weighted_remat": lambda h, w: weighted_token_stats(h, lambda w, x: x @ w, w, t, wt, 3,
                                                               remat=True, alt_targets=alt)}
    fns["weighted_scanned"] = fns["weighted"]

    def full(h, w):
        s = token_stats(h @ w, t)
        return dict(s, alt_logp=token_stats(h @ w, alt)["logp"])

    def loss(h, w, fn):
        s = fn(h, w)
        return jnp.sum((s["logp"] * ca + s["alt_logp"] * cb + 0.1 * s["lse"]) * wt), s["alt_logp"]
    (l0, a0), g0 = jax.value_and_grad(loss, (0, 1), has_aux=True)(h, w, full)
    (l1, a1), g1 = jax.value_and_grad(loss, (0, 1), has_aux=True)(h, w, fns[how])
    np.testing.assert_allclose(a1 * wt, a0 * wt, atol=1e-5)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for x, y in zip(g1, g0):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_weighted_token_stats_skip_chunks_without_weighted_positions():
    """The head runs only on chunks that hold a weighted position, forward and backward:
    5 weighted positions spread over 4 rows of 16 are gathered into one chunk of 8; all-zero
    weights run none."""
    rng = np.random.default_rng(2)
    h = jnp.asarray(rng.normal(size=(4, 16, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 32)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 32, (4, 16)))
    calls = []

    def head(w, x):
        jax.debug.callback(lambda: calls.append(1))
        return x @ w

    wt = np.zeros((4, 16), np.float32)
    wt[[0, 1, 1, 3, 3], [2, 9, 15, 0, 7]] = 1
    stats = lambda h, w, wt, remat=False: weighted_token_stats(h, head, w, t, wt, 8, remat=remat)  # noqa: E731
    out = jax.jit(stats)(h, w, jnp.asarray(wt))
    jax.block_until_ready(out)
    assert len(calls) == 1
    np.testing.assert_allclose(out["logp"] * wt, token_stats(h @ w, t)["logp"] * wt, atol=1e-5)
    for remat, runs in ((False, 2), (True, 2)):   # forward, backward (recomputing the logits with remat)
        calls.clear()
        grads = jax.jit(jax.grad(lambda h, w: jnp.sum(stats(h, w, jnp.asarray(wt), remat)["logp"]), (0, 1)))(h, w)
        jax.block_until_ready(grads)
        assert len(calls) == runs, (remat, len(calls))
    calls.clear()
    out = jax.jit(stats)(h, w, jnp.zeros((4, 16)))
    assert len(calls) == 0 and float(jnp.abs(out["lse"]).sum()) == 0.0
    with pytest.raises(ValueError, match="3 batch groups"):
        weighted_token_stats(h, head, w, t, wt, 8, groups=3)


@pytest.mark.parametrize("remat", [False, True])
def test_weighted_token_stats_keep_one_head_weight_for_the_backward_pass(remat):
    """What the backward pass keeps: the head weight once, the sorted hidden states, the
    chunks' logits (none with remat) and small per-position arrays, not a copy of the
    weight per chunk (what autodiff of the chunk loop's lax.cond saved)."""
    rng = np.random.default_rng(3)
    b, n, e, v, chunk = 2, 64, 16, 512, 16
    h = jnp.asarray(rng.normal(size=(b, n, e)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(e, v)), jnp.float32)
    t = jnp.asarray(rng.integers(0, v, (b, n)))
    wt = jnp.ones((b, n), jnp.float32)
    fn = lambda h, w: weighted_token_stats(h, lambda w, x: x @ w, w, t, wt, chunk, remat=remat)["logp"]  # noqa: E731
    _, vjp = jax.vjp(fn, h, w)
    kept = sum(x.nbytes for x in jax.tree.leaves(vjp) if hasattr(x, "nbytes"))
    logits = 0 if remat else b * n * v * 4
    small = 64 * b * n   # targets, masks, orders, log-sums: a few words per position
    assert w.nbytes + h.nbytes + logits <= kept <= w.nbytes + 2 * h.nbytes + logits + small, kept


def _bf16_head_setup(b=2, n=48, e=24, v=1024):
    rng = np.random.default_rng(5)
    h = jnp.asarray(rng.normal(size=(b, n, e)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(v, e)) * 0.1, jnp.float32)    # tied: [V, E], fp32 master
    t = jnp.asarray(rng.integers(0, v, (b, n)))
    wt = jnp.asarray(rng.random((b, n)) < 0.7, jnp.float32)
    head = lambda w, x, w_cast=None: project_head(w, x, True, jnp.bfloat16, w_cast)  # noqa: E731
    cast = lambda w: w.astype(jnp.bfloat16)  # noqa: E731
    return h, w, t, wt, head, cast


@pytest.mark.parametrize("remat", [False, True])
def test_weighted_token_stats_cast_once_is_the_same_computation(remat):
    """`cast` (the head weight cast to bf16 once per pass instead of once per chunk) gives
    bit-identical stats and gradients, and the weight's gradient stays fp32."""
    h, w, t, wt, head, cast = _bf16_head_setup()

    def loss(h, w, c):
        s = weighted_token_stats(h, head, w, t, wt, 16, remat=remat, cast=c)
        return jnp.sum((s["logp"] + 0.1 * s["lse"] ** 2) * wt), s
    (l0, s0), g0 = jax.jit(jax.value_and_grad(lambda h, w: loss(h, w, None), (0, 1), has_aux=True))(h, w)
    (l1, s1), g1 = jax.jit(jax.value_and_grad(lambda h, w: loss(h, w, cast), (0, 1), has_aux=True))(h, w)
    assert g1[1].dtype == jnp.float32 and g1[0].dtype == jnp.bfloat16
    np.testing.assert_array_equal(l1, l0)
    for k in s0:
        np.testing.assert_array_equal(s1[k], s0[k])
    for a, c in zip(g1, g0):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(c, np.float32))


def _all_eqns(jaxpr):
    """Every equation of a jaxpr and of the jaxprs inside it (cond branches, calls)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _all_eqns(inner)


@pytest.mark.parametrize("scanned", [False, True])
def test_weighted_token_stats_cast_the_weight_once_and_run_each_chunks_exps_once(scanned, monkeypatch):
    """What the gradient of the chunked head computes, in bf16 with `cast`: the [V, E]
    weight is cast to bf16 twice (once per pass, not once per chunk) and each chunk's
    softmax exps run once (the backward pass reuses the forward's), unrolled or scanned."""
    if scanned:
        monkeypatch.setattr(losses, "UNROLL_CHUNKS", 0)
    h, w, t, wt, head, cast = _bf16_head_setup()
    v, e, chunks = w.shape[0], w.shape[1], h.shape[0] * h.shape[1] // 16

    def loss(h, w):
        return jnp.sum(weighted_token_stats(h, head, w, t, wt, 16, cast=cast)["logp"] * wt)
    eqns = list(_all_eqns(jax.make_jaxpr(jax.grad(loss, (0, 1)))(h, w).jaxpr))
    out = lambda q: q.outvars[0].aval  # noqa: E731
    casts = [q for q in eqns if q.primitive.name == "convert_element_type"
             and out(q).shape == (v, e) and out(q).dtype == jnp.bfloat16]
    exps = [q for q in eqns if q.primitive.name == "exp" and out(q).shape[-1:] == (v,)]
    assert len(casts) == 2, casts
    assert len(exps) == (1 if scanned else chunks), exps
