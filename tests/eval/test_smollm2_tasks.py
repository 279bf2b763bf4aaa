"""SmolLM2-135M-Instruct on every registered task and mode at small n (full-n figures are
in the README with the command that produced them)."""
import json

import pytest

from findap_jax.eval.evaluate import evaluate_model
from findap_jax.eval.tasks import BUNDLED, TASKS
from findap_jax.defaults import eval_tasks_config


def _short_real_files(tmp_path) -> dict:
    """ConvFinQA and FinanceBench prompts run to ~2k tokens (a CPU prefill of tens of
    seconds): here the real records with the shortest contexts, a 3-turn conversation and two
    questions with one evidence passage each."""
    conv = json.loads((BUNDLED / "convfinqa_pot" / "convfinqa_dev.json").read_text())
    (tmp_path / "conv.json").write_text(json.dumps([c for c in conv if c["id"] == "Single_ETFC/2014/page_26.pdf-2"]))
    keep = ('"financebench_id_02119"', '"financebench_id_01244"')
    lines = (BUNDLED / "financebench" / "financebench_open_source.jsonl").read_text().splitlines()
    (tmp_path / "fb.jsonl").write_text("".join(ln + "\n" for ln in lines if any(k in ln for k in keep)))
    return {"convfinqa": str(tmp_path / "conv.json"), "financebench": str(tmp_path / "fb.jsonl")}


@pytest.mark.slow
def test_smollm2_runs_every_task(smollm2, tmp_path):
    model, tok = smollm2
    specs = [f"{name}:{mode}" for name, t in TASKS.items() for mode in t.modes]
    cfg = eval_tasks_config(tasks=",".join(specs), limit=2, max_new_tokens=24, files=_short_real_files(tmp_path))
    results, preds = evaluate_model(model, tok, cfg, log=lambda *_: None)
    assert len(results) == len(specs)
    for key, r in results.items():
        assert r["n"] == 2 and 0.0 <= r[r["primary"]] <= 1.0, key
        assert all(isinstance(p["prediction"], str) and p["id"] for p in preds[key])
    # the fpb prompt is the FLARE one and SmolLM2 answers in words; both modes produce labels
    assert preds["fpb"][0]["prediction"] in ("negative", "neutral", "positive")
    # ConvFinQA: one row per turn; FinanceBench keeps its ids, and judge mode (the evaluated
    # model judging itself: judge="") counts the replies it could not read
    assert [p["id"] for p in preds["convfinqa"]] == ["Single_ETFC/2014/page_26.pdf-2:turn0",
                                                     "Single_ETFC/2014/page_26.pdf-2:turn1"]
    assert [p["id"] for p in preds["financebench:judge"]] == ["financebench_id_01244", "financebench_id_02119"]
    fj = results["financebench:judge"]
    assert fj["primary"] == "judge_accuracy" and fj["judge"].startswith("self") and 0 <= fj["judge_unparsed"] <= 2
    assert all(p["judge"] in ("correct", "wrong", None) for p in preds["financebench:judge"])
    assert results["financebench"]["n_numeric"] == 2 and "rougeL" in results["financebench"]
    for key in ("convfinqa", "financebench", "financebench:judge"):
        r = results[key]
        print(f"{key}: {r['primary']}={r[r['primary']]:.3f} n={r['n']} {r['seconds']}s",
              {k: r[k] for k in ("numeric_match", "judge_unparsed") if k in r})
