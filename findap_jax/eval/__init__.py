"""FinEval-style evaluation: task registry (FLARE rows), log-likelihood and generation
scoring, metrics, reports. Entry points: `run_eval(cfg)` (CLI) and `evaluate_model`."""
