"""Ablation: the preference loss of stage 2. The recipe uses RPO (DPO + alpha x NLL of the
chosen answer, Pang et al. 2024) rather than plain DPO to keep the chosen answers likely.

Argument "rpo" (default; beta 0.1, alpha 1.0) or "dpo" (the same sigmoid loss without the
NLL term). Same distilled pairs, steps and LR; compare the "rpo" evals of the two workdirs.

    findap-jax recipe --config=configs/recipes/ablations/dpo_vs_rpo.py:dpo --workdir runs/ablations/dpo
    findap-jax recipe --config=configs/recipes/ablations/dpo_vs_rpo.py:rpo --workdir runs/ablations/rpo
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))

LOSSES = ("dpo", "rpo")


def get_config(arg=None):
    loss = arg or "rpo"
    if loss not in LOSSES:
        raise ValueError(f"dpo_vs_rpo: argument must be one of {list(LOSSES)}, got {arg!r}")
    cfg = common["cpu_recipe"]()
    cfg.stages = "cpt_it,distill,rpo"
    cfg.rpo.train.loss = loss
    return cfg
