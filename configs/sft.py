"""Instruction tuning only: assistant-only loss over packed chats (finance + general IT)."""
from findap_jax import defaults


def get_config(arg=None):
    del arg
    return defaults.experiment_config(
        data=dict(mixture="findap_it", seq_len=512, batch_size=8),
        train=dict(loss="lm", steps=200, lr=1e-5, warmup=0.1),
        run=dict(eval_every=50, eval_mixture="findap_finance_it"))
