"""Ablation (paper App. B): preference alignment from the base model is much worse than PA
from the CPT+IT checkpoint.

Stages "distill,rpo" only: with no training stage the recipe uses the base model (cfg.model)
as the stage-1 model, so the base model writes the trajectories and RPO starts from it with
it as the frozen reference. Compare its "rpo" eval with the one of the full CPU recipe
(configs/recipes/findap_smollm2_cpu.py), which runs PA from its cpt_it checkpoint.

    findap-jax recipe --config=configs/recipes/ablations/pa_from_base.py --workdir runs/ablations/pa_from_base
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    del arg
    cfg = common["cpu_recipe"]()
    cfg.stages = "distill,rpo"
    return cfg
