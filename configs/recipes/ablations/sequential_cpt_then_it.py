"""Ablation (paper App. B): joint CPT+IT beats sequential CPT then IT.

The sequential arm: stage cpt_it trains on the CPT mixture for half of the stage-1 budget,
then stage cpt_it_2 continues from it on the IT mixture for the other half (same rows,
length and optimizer). Compare with joint.py (same data proportions, mixed in one run).

    findap-jax recipe --config=configs/recipes/ablations/sequential_cpt_then_it.py \
        --workdir runs/ablations/sequential
"""
import copy
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    del arg
    cfg = common["stage1_ablation"]("findap_cpt")
    cfg.stages = "cpt_it,cpt_it_2"
    total = cfg.cpt_it.train.steps
    cfg.cpt_it_2 = copy.deepcopy(cfg.cpt_it)
    cfg.cpt_it.train.steps = total // 2
    cfg.cpt_it_2.train.steps = total - total // 2
    cfg.cpt_it_2.data.mixture = "findap_it"
    return cfg
