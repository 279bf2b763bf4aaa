"""Ablation (paper App. B): CPT alone destroys chat ability (MT-Bench 7.89 -> ~1.0).

Stage 1 on the CPT mixture only (finance + general text, no instructions), same budget as the
other stage-1 ablations. Expect FPB to move and CFA-style answers to lose their format
(few extractable "Selection: [[X]]" answers) against the base model and it_only.py / joint.py.

    findap-jax recipe --config=configs/recipes/ablations/cpt_only.py --workdir runs/ablations/cpt_only
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    del arg
    return common["stage1_ablation"]("findap_cpt")
