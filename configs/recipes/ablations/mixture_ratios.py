"""Ablation: the CPT:IT ratio of the joint mixture (the paper settles on 50% CPT / 50% IT).

Argument: the CPT rate in [0, 1] (default 0.5); 0 is IT only, 1 is CPT only. One run per
value, stage 1 only, same budget, e.g.

    for r in 0.25 0.5 0.75; do
      findap-jax recipe --config=configs/recipes/ablations/mixture_ratios.py:$r \
          --workdir runs/ablations/cpt_rate_$r
    done
"""
import runpy
from pathlib import Path

common = runpy.run_path(str(Path(__file__).with_name("_common.py")))


def get_config(arg=None):
    text = arg or "0.5"
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"mixture_ratios: argument must be a CPT rate like 0.25, got {arg!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mixture_ratios: CPT rate must be within [0, 1], got {rate}")
    return common["stage1_ablation"]("findap_joint", cpt_rate=rate)
