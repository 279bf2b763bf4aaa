"""Ablation (paper App. B): joint CPT+IT beats sequential CPT then IT.

The joint arm: one stage-1 run on the rate mixture at the paper's 50% CPT / 50% IT, so it
sees the same data proportions as sequential_cpt_then_it.py (half the steps on CPT, then half
on IT) in the same total budget; only the ordering differs.

    findap-jax recipe --config=configs/recipes/ablations/joint.py --workdir runs/ablations/joint
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    del arg
    return common["stage1_ablation"]("findap_joint", cpt_rate=0.5)
