"""Ablation (paper App. B): PA data = FAP + SCP; the stepwise corrective pairs (process
signal) add to the final-answer pairs (outcome signal).

This is the FAP + SCP arm: the full CPU recipe, whose distillation writes both pair types
(distill/pairs.jsonl, counted in distill/pairs.jsonl.stats.json). The FAP-only arm is
fap_only.py (`distill.scp=False`).

    findap-jax recipe --config=configs/recipes/ablations/fap_scp.py --workdir runs/ablations/fap_scp
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    del arg
    cfg = common["cpu_recipe"]()
    cfg.stages = "cpt_it,distill,rpo"
    return cfg
