"""FAP + SCP preference distillation on CFA-style exercises (bundled set by default).
Override e.g. --config.policy=runs/joint/final --config.judge=PATH --config.output=FILE."""
from findap_jax import defaults


def get_config(arg=None):
    del arg
    return defaults.distill_config()
