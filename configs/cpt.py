"""Continual pretraining only (finance + general text), masked CE over packed rows."""
from findap_jax import defaults


def get_config(arg=None):
    del arg
    return defaults.experiment_config(
        data=dict(mixture="findap_cpt", seq_len=512, batch_size=8),
        train=dict(loss="lm", steps=200, lr=5e-6, warmup=0.1),
        run=dict(eval_every=50, eval_mixture="findap_finance_it"))
