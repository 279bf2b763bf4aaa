"""Ablation (paper App. B): IT alone keeps chat ability (MT-Bench 7.2) but adds little
domain knowledge; joint CPT+IT is the recipe's answer to both.

Stage 1 on the IT mixture only (finance + general instructions), same budget as the other
stage-1 ablations; compare with cpt_only.py and joint.py.

    findap-jax recipe --config=configs/recipes/ablations/it_only.py --workdir runs/ablations/it_only
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    del arg
    return common["stage1_ablation"]("findap_it")
