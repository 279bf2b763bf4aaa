"""DPO on preference pairs (sigmoid loss, beta 0.1) against the frozen starting model."""
from findap_jax import defaults


def get_config(arg=None):
    del arg
    return defaults.experiment_config(
        data=dict(mixture="findap_preference", seq_len=512, batch_size=4, pack=False),
        train=dict(loss="dpo", steps=100, lr=5e-7, warmup=0.1, beta=0.1))
