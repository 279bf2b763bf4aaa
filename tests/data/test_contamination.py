"""13-gram contamination guard between training tasks and eval tasks."""
import json

import pytest

from findap_jax.data.contamination import check, eval_rows_for, overlap
from findap_jax.data.registry import default_specs
from findap_jax.data.tasks import TaskSpec
from findap_jax.eval.tasks import TASKS, get_task, load_rows

ALL_EVAL = ",".join(TASKS)   # every registered eval task, convfinqa and financebench included


def test_bundled_training_data_does_not_overlap_eval_tasks():
    """Every default training task (the joint CPT+IT mixture's four, both preference sets)
    against every registered eval task: zero rows share a 13-gram."""
    report = overlap(default_specs(), eval_rows_for(ALL_EVAL))
    assert set(report) == {"finance_cpt", "general_cpt", "finance_it", "general_it", "preference",
                           "general_preference"}
    assert all(set(per) == set(TASKS) for per in report.values())
    hits = {(t, e): r for t, per in report.items() for e, r in per.items() if r["rows"]}
    assert hits == {}
    assert report["finance_it"]["fpb"]["of"] == 985   # 11 sentences have under 6 words
    assert report["finance_it"]["finner"]["of"] == 261   # of 332 held-out sentences (71 under 6 words)
    assert report["finance_it"]["tweets_sentiment"]["of"] == 377


def test_a_leaked_sentence_and_a_leaked_tweet_are_found(tmp_path):
    fpb = load_rows(get_task("fpb"))[10]
    tweet = next(r for r in load_rows(get_task("tweets_sentiment")) if 6 <= len(r["text"].split()) < 13)
    leak = tmp_path / "leak.jsonl"
    leak.write_text(json.dumps({"messages": [{"role": "user", "content": "Classify: " + fpb["text"]},
                                             {"role": "assistant", "content": "positive"}]}) + "\n")
    cpt = tmp_path / "cpt.jsonl"
    cpt.write_text(json.dumps({"text": "Market wrap. " + tweet["text"] + " More news follows."}) + "\n")
    train = {"leaky_it": TaskSpec("chat", {"train": str(leak)}), "leaky_cpt": TaskSpec("cpt", {"train": str(cpt)})}
    report = overlap(train, eval_rows_for("fpb,tweets_sentiment"))
    assert report["leaky_it"]["fpb"]["rows"] >= 1 and fpb["id"] in report["leaky_it"]["fpb"]["ids"]
    assert report["leaky_cpt"]["tweets_sentiment"]["rows"] >= 1
    assert report["leaky_cpt"]["fpb"]["rows"] == 0
    with pytest.raises(ValueError, match=r"contamination: training task leaky_it shares \d+ of 985 rows of eval task fpb"):
        check(report, max_share=0.0)
    check(report, max_share=0.01)   # under a deliberate threshold


@pytest.mark.parametrize("mixture", ["findap_joint", "findap_joint_downsample"])
def test_the_mixture_check_reads_the_tasks_under_a_composite_task(tmp_path, mixture):
    """joint_downsample is one task over the four joint tasks' files: its check reads them."""
    from findap_jax import defaults
    from findap_jax.data.contamination import mixture_report
    from findap_jax.data.pipeline import register
    from findap_jax.data.tokenizer import Tokenizer
    from tests.helpers import save_tiny_tokenizer

    fpb = load_rows(get_task("fpb"))[10]
    leak = tmp_path / "leak.jsonl"
    leak.write_text(json.dumps({"prompt": fpb["text"], "response": "neutral"}) + "\n")
    cfg = defaults.data_config()
    cfg.update(mixture=mixture, tasks={"finance_it": {"train": str(leak)}})
    cfg.contamination.eval_tasks = "fpb"
    register(cfg, Tokenizer.from_dir(save_tiny_tokenizer(tmp_path / "tok")))
    report = mixture_report(cfg)
    assert set(report) == {"finance_it", "general_it", "finance_cpt", "general_cpt"}
    with pytest.raises(ValueError, match=r"training task finance_it shares 1 of 985 rows of eval task fpb"):
        check(report, max_share=0.0)
