"""Ablation (paper App. B): general-domain data in preference alignment is unnecessary.

Argument: the share of distilled pairs in the RPO mixture (default 0.5; 1.0 is the recipe's
distilled-only setting); the rest comes from `general_pairs`: here the bundled general-domain
pairs `findap_general_preference` (998 HH-RLHF harmless-base pairs). To test the paper's
claim at scale, register a larger general preference set (jsonl rows with prompt / chosen /
rejected):

    findap-jax recipe --config=configs/recipes/ablations/pa_general_pairs.py:0.5 \
        --workdir runs/ablations/pa_general_0.5 \
        --config.rpo.data.tasks="{'general_pref': {'kind': 'preference', 'train': '/data/general_pairs/*.jsonl'}}" \
        --config.general_pairs=general_pref
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    try:
        share = float(arg or "0.5")
    except ValueError:
        raise ValueError(f"pa_general_pairs: argument must be a share like 0.5, got {arg!r}") from None
    if not 0.0 < share <= 1.0:
        raise ValueError(f"pa_general_pairs: the distilled share must be within (0, 1], got {share}")
    cfg = common["cpu_recipe"]()
    cfg.stages = "cpt_it,distill,rpo"
    cfg.distilled_share = share
    cfg.general_pairs = "findap_general_preference"
    return cfg
