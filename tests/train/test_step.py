"""The train step: sharded equals single-device, accumulation equals the big batch,
non-finite steps are not applied."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from findap_jax import defaults
from findap_jax.model import Llama, get_preset
from findap_jax.parallel import make_mesh
from findap_jax.parallel.sharding import state_shardings
from findap_jax.train.optim import make_optimizer
from findap_jax.train.step import (TrainState, batch_sharding, init_sharded_state, init_state,
                                   make_train_step, split_model)


def lm_batch(seed, b=8, n=16, vocab=256):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (b, n)).astype(np.int32)
    seg = np.ones((b, n), np.int32)
    seg[:, n // 2:] = 2
    seg[0, -3:] = 0
    pos = np.where(seg == 1, np.arange(n), np.arange(n) - n // 2).astype(np.int32)
    w = (rng.random((b, n)) > 0.3).astype(np.int32)
    tgt = np.zeros_like(tokens)
    tgt[:, :-1] = tokens[:, 1:]
    same = np.zeros_like(w)
    same[:, :-1] = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    return {"input_tokens": tokens, "target_tokens": tgt * same, "loss_weights": w * same,
            "segment_ids": seg, "positions": pos}


def pref_batch(seed, b=4, n=12, vocab=256):
    out = {}
    for side, s in (("chosen", seed), ("rejected", seed + 100)):
        lb = lm_batch(s, b, n, vocab)
        lb["segment_ids"] = np.ones_like(lb["segment_ids"])
        lb["positions"] = np.broadcast_to(np.arange(n), (b, n)).astype(np.int32)
        tgt = np.zeros_like(lb["input_tokens"])
        tgt[:, :-1] = lb["input_tokens"][:, 1:]
        w = np.zeros_like(tgt)
        w[:, 5:-1] = 1
        lb["target_tokens"], lb["loss_weights"] = tgt, w
        out.update({f"{side}_{k}": v for k, v in lb.items()})
    return out


def train_cfg(**kw):
    # eps=1e-6: Adam divides by sqrt(v) + eps, so with a tiny eps a parameter whose gradient
    # is ~0 (rounding noise) would move by ~lr in either direction and hide real differences.
    tc = defaults.train_config()
    tc.update(dict(steps=10, lr=1e-3, warmup=0, schedule="constant", weight_decay=0.1, eps=1e-6))
    tc.update(kw)
    return tc


def run(tc, batches, mesh=None, model_seed=0, ref=False):
    cfg = get_preset("tiny").replace(tie_word_embeddings=False)
    model = Llama(cfg, rngs=nnx.Rngs(model_seed))
    graphdef, params, rest = split_model(model)
    tx, schedule = make_optimizer(tc)
    step = make_train_step(graphdef, tx, schedule, tc)
    ref_params = jax.tree.map(jnp.copy, params) if ref else None
    if mesh is None:
        state = init_state(params, tx)
        fn = jax.jit(step)
        feed = lambda b: jax.tree.map(jnp.asarray, b)  # noqa: E731
    else:
        shard = state_shardings(params, mesh)
        state, s_shard = init_sharded_state(params, tx, mesh, shard)
        if ref:
            ref_params = jax.device_put(ref_params, shard)
        in_sh = (s_shard, batch_sharding(mesh)) + ((shard,) if ref else ())
        fn = jax.jit(step, in_shardings=in_sh, out_shardings=(s_shard, None), donate_argnums=0)
        feed = lambda b: jax.device_put(b, batch_sharding(mesh))  # noqa: E731
    metrics = []
    with jax.set_mesh(mesh) if mesh is not None else _null():
        for b in batches:
            state, m = fn(state, feed(b), ref_params) if ref else fn(state, feed(b))
            metrics.append(jax.tree.map(float, m))
    return state, metrics


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _close(a: TrainState, b: TrainState, atol):
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


@pytest.mark.parametrize("loss", ["lm", "dpo"])
def test_sharded_step_equals_single_device(loss):
    tc = train_cfg(loss=loss)
    batches = [lm_batch(i) for i in range(2)] if loss == "lm" else [pref_batch(i) for i in range(2)]
    ref = loss != "lm"
    one, m1 = run(tc, batches, ref=ref)
    eight, m8 = run(tc, batches, mesh=make_mesh(dict(data=1, fsdp=4, tensor=2)), ref=ref)
    _close(one, eight, 1e-5)
    for a, b in zip(m1, m8):
        assert abs(a["loss"] - b["loss"]) <= 1e-5


@pytest.mark.parametrize("loss,per_sequence", [("lm", False), ("lm", True), ("rpo", False)])
def test_grad_accumulation_equals_big_batch(loss, per_sequence):
    make = lm_batch if loss == "lm" else pref_batch
    batches = [make(i, b=8) for i in range(2)]
    big, mb = run(train_cfg(loss=loss, per_sequence=per_sequence), batches, ref=loss != "lm")
    acc, ma = run(train_cfg(loss=loss, per_sequence=per_sequence, grad_accum=4), batches, ref=loss != "lm")
    _close(big, acc, 1e-5)
    for a, b in zip(mb, ma):
        # rewards/accuracies counts margins > 0; right after the start the margins are ~1e-7
        # and rounding may flip a tie, so the continuous rewards/margins is what is compared.
        for k in set(a) - {"rewards/accuracies"}:
            assert abs(a[k] - b[k]) <= 1e-5, k


def test_non_finite_step_is_not_applied():
    tc = train_cfg(loss="lm")
    good = lm_batch(0)
    state, m = run(tc, [good])
    cfg = get_preset("tiny").replace(tie_word_embeddings=False)
    graphdef, params, _ = split_model(Llama(cfg, rngs=nnx.Rngs(0)))
    tx, schedule = make_optimizer(tc)
    step = jax.jit(make_train_step(graphdef, tx, schedule, tc))
    poisoned = jax.tree.map(lambda x: x.at[0].set(jnp.nan) if x.ndim == 2 and x.shape[0] == 256 else x,
                            state.params)
    s2, m2 = step(TrainState(state.step, poisoned, state.opt_state), jax.tree.map(jnp.asarray, good))
    assert float(m2["finite"]) == 0.0 and int(s2.step) == int(state.step)


@pytest.mark.parametrize("loss,extra", [("lm", dict(label_smoothing=0.1, z_loss=1e-3)),
                                        ("lm", dict(per_sequence=True)), ("rpo", {})])
@pytest.mark.parametrize("ce_chunk,head_chunk", [(5, 0), (0, 5), (3, 512)])
def test_chunked_head_equals_whole_rows(loss, extra, ce_chunk, head_chunk):
    """train.ce_chunk (the head a few positions per row at a time, logits recomputed) and
    train.head_chunk (the head on loss-weighted positions only; 5 and 3 divide neither 16
    nor 12): same loss, metrics and parameters after two steps as whole rows at once."""
    make = lm_batch if loss == "lm" else pref_batch
    batches = [make(i) for i in range(2)]
    whole, mw = run(train_cfg(loss=loss, ce_chunk=0, head_chunk=0, **extra), batches, ref=loss != "lm")
    chunked, mc = run(train_cfg(loss=loss, ce_chunk=ce_chunk, head_chunk=head_chunk, **extra), batches,
                      ref=loss != "lm")
    _close(whole, chunked, 1e-5)
    for a, b in zip(mw, mc):
        for k in set(a) - {"rewards/accuracies"}:
            assert abs(a[k] - b[k]) <= 1e-5, k
