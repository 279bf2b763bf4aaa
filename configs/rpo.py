"""RPO = DPO + alpha x NLL of the chosen answer (FinDAP stage 2: beta 0.1, alpha 1.0, LR 5e-7)."""
from findap_jax import defaults


def get_config(arg=None):
    del arg
    return defaults.experiment_config(
        data=dict(mixture="findap_preference", seq_len=2048, batch_size=4, pack=False),
        train=dict(loss="rpo", steps=100, lr=5e-7, warmup=0.1, beta=0.1, alpha=1.0))
