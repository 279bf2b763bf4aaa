"""Shared pieces of the ablation configs (a helper, not a config: it has no get_config).

Config files are loaded by path (findap_jax.config.load_module_config), not imported as a
package, so the ablations load this file and the CPU recipe with runpy, relative to __file__.
"""
import runpy
from pathlib import Path

CPU_RECIPE = Path(__file__).resolve().parents[1] / "findap_smollm2_cpu.py"

# Stage-1 ablations evaluate FPB (finance task, log-likelihood) and the CFA-style questions
# (chain of thought + "Selection: [[X]]": needs the model to still follow instructions).
STAGE1_EVAL = "fpb,cfa_mini"


def cpu_recipe():
    """configs/recipes/findap_smollm2_cpu.py: SmolLM2-135M-Instruct on a few CPU cores."""
    return runpy.run_path(str(CPU_RECIPE))["get_config"]()


def stage1_ablation(mixture: str, cpt_rate: float | None = None):
    """The CPU recipe cut to its stage-1 run (cpt_it) on `mixture`, evaluated before and after;
    every stage-1 ablation keeps the CPU recipe's budget (steps x rows x length)."""
    cfg = cpu_recipe()
    cfg.stages = "cpt_it"
    cfg.eval.tasks = STAGE1_EVAL
    cfg.cpt_it.data.mixture = mixture
    if cpt_rate is not None:
        cfg.cpt_it.data.joint.cpt_rate = cpt_rate
    return cfg
