"""FinEval-style evaluation on the bundled tasks (FPB test split, CFA-style MCQ, FinQA-style
arithmetic). Override e.g. --config.model=PATH --config.tasks=fpb,cfa_mini --config.output_dir=DIR."""
from findap_jax import defaults


def get_config(arg=None):
    del arg
    return defaults.eval_config()
