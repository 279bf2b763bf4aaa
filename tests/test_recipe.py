"""The tiny recipe end to end: every stage runs, outputs land, reruns skip finished
stages, and an interruption inside a stage resumes there."""
import json
from pathlib import Path

import pytest

from findap_jax import recipe as recipe_mod
from findap_jax.config import load_config
from findap_jax.recipe import Recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]


def _cfg(model, **over):
    args = [f"model={model}"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(str(ROOT / "configs/recipes/tiny.py"), args)


def test_tiny_recipe_runs_every_stage_and_reruns_skip(tiny_chat_model, tmp_path):
    logs = []
    report = run_recipe(_cfg(tiny_chat_model), tmp_path, log=logs.append)
    for label in ("base", "cpt_it", "rpo"):
        res = json.loads((tmp_path / "eval" / label / "results.json").read_text())
        assert set(res) == {"fpb", "cfa_mini"} and all(r["n"] == 8 for r in res.values())
    for stage in ("cpt_it", "rpo"):
        rows = [json.loads(x) for x in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert (tmp_path / stage / "final").is_dir()
    stats = json.loads((tmp_path / ".distill.done").read_text())["stats"]
    assert stats["samples"] == 4   # 2 exercises x k=2
    text = report.read_text()
    assert "| n | base | cpt_it | rpo |" in text and "| fpb |" in text and "| cfa_mini |" in text
    assert (tmp_path / "report.png").stat().st_size > 10_000
    # RPO's reference is the stage-1 model: the rpo stage started from cpt_it/final
    cfg_json = json.loads((tmp_path / "rpo" / "config.json").read_text())
    assert cfg_json["model"]["path"] == str(tmp_path / "cpt_it" / "final")

    logs.clear()
    run_recipe(_cfg(tiny_chat_model), tmp_path, log=logs.append)
    skipped = [m for m in logs if "done, skipped" in m]
    assert len(skipped) == 6, logs   # 3 evals, cpt_it, distill, rpo


def test_interrupted_stage_resumes_from_its_checkpoint(tiny_chat_model, tmp_path, monkeypatch):
    from findap_jax.train import trainer as trainer_mod

    class Stop(Exception):
        pass

    real_save = trainer_mod.Checkpointer.save

    def crash_after_step_2(self, step, *a, **k):
        real_save(self, step, *a, **k)
        if step == 2 and "rpo" in str(self.dir):
            raise Stop()

    monkeypatch.setattr(trainer_mod.Checkpointer, "save", crash_after_step_2)
    cfg = _cfg(tiny_chat_model, eval_before="false")
    with pytest.raises(Stop):
        run_recipe(cfg, tmp_path, log=lambda *_: None)
    assert (tmp_path / ".cpt_it.done").exists() and not (tmp_path / ".rpo.done").exists()
    monkeypatch.setattr(trainer_mod.Checkpointer, "save", real_save)
    logs = []
    run_recipe(cfg, tmp_path, log=logs.append)
    assert any("cpt_it: done, skipped" in m for m in logs)
    assert any("distill: done, skipped" in m for m in logs)
    rows = [json.loads(x) for x in (tmp_path / "rpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]   # steps 1-2 before the crash, 3 after resume


def test_stage_list_is_checked():
    cfg = recipe_mod.recipe_config()
    for bad, msg in (("cpt_it,rpo", "distill before"), ("rpo,distill", "order"), ("sft", "unknown")):
        cfg.stages = bad
        with pytest.raises(ValueError, match=msg):
            Recipe(cfg, "/tmp/unused-recipe-dir")


def test_a_stage_done_from_another_model_is_not_skipped_silently(tmp_path, monkeypatch):
    """Adding cpt_it_2 to a finished recipe changes distill's and rpo's input model: their
    markers, written from cpt_it's model, must not pass for this recipe's stages."""
    r = Recipe(recipe_mod.recipe_config(), tmp_path, log=lambda *_: None)
    r._finish("distill", {"seconds": 1.0}, str(tmp_path / "cpt_it" / "final"))
    assert r._info("distill", str(tmp_path / "cpt_it" / "final"))["seconds"] == 1.0
    with pytest.raises(ValueError, match=r"\.distill\.done: stage distill ran from .*cpt_it/final, but this "
                                         r"recipe runs it from .*cpt_it_2/final"):
        r.distill(str(tmp_path / "cpt_it_2" / "final"))
    monkeypatch.chdir(tmp_path)                                  # the same model, spelled relative
    assert r._info("distill", "cpt_it/../cpt_it/final")["seconds"] == 1.0
    (tmp_path / ".eval_base.done").write_text('{"seconds": 2.0}')   # a marker from before inputs were kept
    r.evaluate("base", "any-model")
    assert r.evals[-1][0] == "base"


def test_rpo_trains_on_distilled_pairs_mixed_with_general_pairs(tiny_chat_model, tmp_path):
    pairs = tmp_path / "distill" / "pairs.jsonl"
    pairs.parent.mkdir()
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}? Answer with A, B or C.",
                                         "chosen": "Step 1: check. The answer is [[A]].",
                                         "rejected": "The answer is [[B]].", "type": "fap"}) + "\n"
                             for i in range(6)))
    cfg = _cfg(tiny_chat_model, distilled_share="0.5")
    r = Recipe(cfg, tmp_path, log=lambda *_: None)
    data = r.rpo_data(pairs, 6)
    assert data["mixture"] == "custom" and data["rates"] == {"distilled_pairs": 0.5,
                                                              "findap_preference": 0.5}
    final = r.train("rpo", str(tiny_chat_model), data)
    assert Path(final).is_dir() and r.notes == []
    saved = json.loads((tmp_path / "rpo" / "config.json").read_text())["data"]
    assert saved["tasks"]["distilled_pairs"]["train"] == str(pairs) and saved["mixture"] == "custom"


def test_a_crash_in_each_stage_resumes_to_the_uninterrupted_result(tiny_chat_model, tmp_path, monkeypatch):
    """Crash once inside every stage in turn (stage-1 training, its eval, distillation, RPO),
    rerunning the same command after each: the end state equals one uninterrupted run."""
    from findap_jax.distill import pipeline
    from findap_jax.eval import evaluate
    from findap_jax.train import trainer as trainer_mod

    class Stop(Exception):
        pass

    over = dict(eval_before="false", **{"distill.exercises_per_batch": "1"})
    whole = tmp_path / "whole"
    run_recipe(_cfg(tiny_chat_model, **over), whole, log=lambda *_: None)

    real_save, real_task, real_batch = trainer_mod.Checkpointer.save, evaluate.run_task, pipeline.process_batch
    armed = {"stage": None}

    def save(self, step, *a, **k):
        real_save(self, step, *a, **k)
        if step == 2 and armed["stage"] in Path(self.dir).parts:
            raise Stop()

    def run_task(model, tok, task, *a, **k):
        if armed["stage"] == "eval" and task.name == "cfa_mini":   # after fpb, before cfa_mini
            raise Stop()
        return real_task(model, tok, task, *a, **k)

    batches = []

    def process_batch(*a, **k):
        batches.append(1)
        if armed["stage"] == "distill" and len(batches) == 2:
            raise Stop()
        return real_batch(*a, **k)

    monkeypatch.setattr(trainer_mod.Checkpointer, "save", save)
    monkeypatch.setattr(evaluate, "run_task", run_task)
    monkeypatch.setattr(pipeline, "process_batch", process_batch)
    crashed = tmp_path / "crashed"
    for stage in ("cpt_it", "eval", "distill", "rpo"):
        armed["stage"] = stage
        with pytest.raises(Stop):
            run_recipe(_cfg(tiny_chat_model, **over), crashed, log=lambda *_: None)
    armed["stage"] = None
    run_recipe(_cfg(tiny_chat_model, **over), crashed, log=lambda *_: None)

    def losses(d, stage):
        return [(r["step"], r["loss"]) for r in
                map(json.loads, (d / stage / "metrics.jsonl").read_text().splitlines())]

    for stage in ("cpt_it", "rpo"):
        assert losses(crashed, stage) == losses(whole, stage)
    assert (crashed / "distill" / "pairs.jsonl").read_text() == (whole / "distill" / "pairs.jsonl").read_text()
    for label in ("cpt_it", "rpo"):
        a, b = (json.loads((d / "eval" / label / "results.json").read_text()) for d in (crashed, whole))
        for res, d in ((a, crashed), (b, whole)):
            for r in res.values():
                for k in ("seconds", "examples_per_s"):
                    r.pop(k)
                assert r.pop("model").startswith(f"{(d / label / 'final').resolve()}|")   # each run's own
        assert a == b
