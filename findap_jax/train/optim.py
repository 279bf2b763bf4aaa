"""AdamW with warmup + cosine/linear/constant decay and global-norm clipping (optax)."""
from __future__ import annotations

import jax
import optax


def warmup_steps(train_cfg) -> int:
    w = train_cfg.warmup
    return int(round(w * train_cfg.steps)) if isinstance(w, float) and w < 1.0 else int(w)


def make_schedule(train_cfg) -> optax.Schedule:
    """Linear warmup from 0 (a fraction of `steps` when < 1) then the named decay to
    `lr * end_lr_ratio` at `steps`."""
    lr, steps = float(train_cfg.lr), int(train_cfg.steps)
    warm = min(warmup_steps(train_cfg), steps)
    end = lr * float(train_cfg.end_lr_ratio)
    rest = max(steps - warm, 1)
    kind = train_cfg.schedule
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(lr, rest, alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(lr, end, rest)
    elif kind == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"train.schedule={kind!r}: choose cosine, linear or constant")
    if warm == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), decay], [warm])


def decay_mask(params):
    """Weight decay on the weight matrices and embeddings, not on norm scales, as HF/FinDAP
    do. By name, not rank: the layer stack makes every layer's norm scale [L, D]."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.ndim >= 2 and "norm" not in jax.tree_util.keystr(path), params)


def make_optimizer(train_cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(train_cfg)
    parts = []
    if train_cfg.max_grad_norm and train_cfg.max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(float(train_cfg.max_grad_norm)))
    parts.append(optax.adamw(schedule, b1=float(train_cfg.b1), b2=float(train_cfg.b2),
                             eps=float(train_cfg.eps), weight_decay=float(train_cfg.weight_decay),
                             mask=decay_mask))
    return optax.chain(*parts), schedule
