"""FinDAP stage 1: joint CPT+IT in one run (masked CE over packed rows of both).

    findap-jax train --config=configs/joint_cpt_it.py --workdir runs/joint
Mixture knobs: --config.data.joint.cpt_rate=0.5 (CPT:IT), cpt_finance_share, it_finance_share;
--config.data.mixture=findap_joint_downsample cuts CPT to the IT example count.
The contamination guard (and `findap-jax data inspect`) checks every registered eval task.
"""
from findap_jax import defaults
from findap_jax.eval.tasks import TASKS


def get_config(arg=None):
    del arg
    return defaults.experiment_config(
        data=dict(mixture="findap_joint", seq_len=512, batch_size=8,
                  contamination=dict(eval_tasks=",".join(TASKS))),
        train=dict(loss="lm", steps=200, lr=5e-6, warmup=0.1, weight_decay=0.1, b1=0.9, b2=0.95),
        run=dict(eval_every=50, eval_mixture="findap_finance_it"))
