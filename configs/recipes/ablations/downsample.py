"""Ablation: how CPT and IT are mixed in stage 1 (paper vs its public code).

Argument "downsample" (default): the public FinDAP code's mechanics, findap_joint_downsample
(CPT examples cut to the number of IT examples, 1:1 by example count, concatenated and
shuffled). Argument "rates": the paper's description, findap_joint sampling CPT and IT at
50% / 50% by rate. Same budget and shares otherwise; stage 1 only.

    findap-jax recipe --config=configs/recipes/ablations/downsample.py:downsample --workdir runs/ablations/downsample
    findap-jax recipe --config=configs/recipes/ablations/downsample.py:rates --workdir runs/ablations/rates
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))

MIXTURES = {"downsample": "findap_joint_downsample", "rates": "findap_joint"}


def get_config(arg=None):
    arm = arg or "downsample"
    if arm not in MIXTURES:
        raise ValueError(f"downsample: argument must be one of {sorted(MIXTURES)}, got {arg!r}")
    return common["stage1_ablation"](MIXTURES[arm], cpt_rate=0.5)
