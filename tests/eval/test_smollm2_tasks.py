"""SmolLM2-135M-Instruct on every registered task and mode at small n (full-n figures are
in the README with the command that produced them)."""
import pytest

from findap_jax.eval.evaluate import evaluate_model
from findap_jax.eval.tasks import TASKS
from findap_jax.defaults import eval_tasks_config


@pytest.mark.slow
def test_smollm2_runs_every_task(smollm2):
    model, tok = smollm2
    specs = [f"{name}:{mode}" for name, t in TASKS.items() for mode in t.modes]
    cfg = eval_tasks_config(tasks=",".join(specs), limit=2, max_new_tokens=24)
    results, preds = evaluate_model(model, tok, cfg, log=lambda *_: None)
    assert len(results) == len(specs)
    for key, r in results.items():
        assert r["n"] == 2 and 0.0 <= r[r["primary"]] <= 1.0, key
        assert all(isinstance(p["prediction"], str) and p["id"] for p in preds[key])
    # the fpb prompt is the FLARE one and SmolLM2 answers in words; both modes produce labels
    assert preds["fpb"][0]["prediction"] in ("negative", "neutral", "positive")
