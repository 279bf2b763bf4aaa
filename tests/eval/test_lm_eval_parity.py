"""SmolLM2-135M-Instruct on the bundled FPB test split: our log-likelihood multiple choice
vs lm-evaluation-harness (HF backend, the same FLARE prompt and chat template through a
local task YAML). A prefix of the split keeps the test to a few minutes; the full split
is `python bench/lm_eval_agreement.py` (figures in the README)."""
import numpy as np
import pytest

from findap_jax.eval.runner import run_task
from findap_jax.eval.tasks import get_task, load_rows

N = 120


@pytest.mark.slow
def test_fpb_choices_agree_with_lm_eval(smollm2, smollm2_path, tmp_path):
    pytest.importorskip("lm_eval")
    from tests.eval.lm_eval_ref import lm_eval_mc

    task = get_task("fpb")
    rows = load_rows(task, limit=N)
    ref = lm_eval_mc(smollm2_path, task_file(task), tmp_path, limit=N)
    model, tok = smollm2
    res, recs = run_task(model, tok, task, rows, mode="loglik")
    assert len(ref) == len(recs) == N
    ours = np.array([r["pred"] for r in recs])
    theirs = np.array([d["pred"] for d in ref])
    assert np.mean(ours == theirs) >= 0.99
    assert abs(res["accuracy"] - np.mean([d["acc"] for d in ref])) <= 0.005
    # the log-likelihoods themselves: same tokens, fp32 on both sides
    np.testing.assert_allclose([r["loglik"] for r in recs], [d["lls"] for d in ref], atol=5e-3)


def task_file(task):
    from findap_jax.eval.tasks import resolve_files
    (path,) = resolve_files(task)
    return path
