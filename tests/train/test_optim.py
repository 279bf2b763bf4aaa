"""AdamW's weight-decay mask on the real parameter tree, and checkpoint retention."""
import jax
import jax.numpy as jnp
from flax import nnx

from findap_jax import defaults
from findap_jax.model import Llama, get_preset
from findap_jax.train.optim import decay_mask, make_optimizer
from findap_jax.train.step import split_model


def test_norm_scales_are_never_decayed_even_stacked_per_layer():
    """The layer stack makes each norm scale [L, D]: a rank test would decay it."""
    _, params, _ = split_model(Llama(get_preset("tiny"), rngs=nnx.Rngs(0)))
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]}
    norms = {k: m for k, m in flat.items() if "norm" in k}
    assert len(norms) == 3 and not any(norms.values())          # attn, mlp (each [L, D]) and final norm
    assert all(m for k, m in flat.items() if "norm" not in k)   # matrices and the embedding decay
    cfg = defaults.train_config()
    cfg.update(lr=1e-2, weight_decay=0.5, warmup=0, max_grad_norm=0.0)
    tx, _ = make_optimizer(cfg)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    moved = {jax.tree_util.keystr(p): float(jnp.abs(u).max())
             for p, u in jax.tree_util.tree_flatten_with_path(updates)[0]}
    assert all(v == 0.0 for k, v in moved.items() if "norm" in k)
    assert all(v > 0.0 for k, v in moved.items() if "norm" not in k)


def test_keep_zero_keeps_every_checkpoint(tmp_path):
    from findap_jax.train.checkpointing import Checkpointer
    from findap_jax.train.step import TrainState

    state = TrainState(step=jnp.asarray(0), params={"w": jnp.ones(3)}, opt_state={"m": jnp.zeros(3)})
    ckpt = Checkpointer(tmp_path, keep=0, async_save=False, log=lambda *_: None)
    for step in (1, 2, 3):
        ckpt.save(step, state, {"batches": step})
    assert ckpt.latest_step() == 3
    ckpt.close()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2, 3]

