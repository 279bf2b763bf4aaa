"""Ablation (paper App. B): PA data = FAP pairs only (outcome signal), against fap_scp.py
(FAP + the stepwise corrective SCP pairs). Distillation skips the judge's step
corrections (`distill.scp=False`), so only final-answer pairs reach RPO.

    findap-jax recipe --config=configs/recipes/ablations/fap_only.py --workdir runs/ablations/fap_only
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    del arg
    cfg = common["cpu_recipe"]()
    cfg.stages = "cpt_it,distill,rpo"
    cfg.distill.scp = False
    return cfg
