"""Distillation end to end: exact FAP/SCP pairs from a scripted judge, the same file for any
batching and after an interruption, and a real tiny policy's pairs train an RPO step."""
import json
from pathlib import Path

import pytest

from findap_jax.config import load_config
from findap_jax.defaults import distill_config
from findap_jax.distill.pipeline import distill, exercise_seed
from findap_jax.distill.prompts import policy_prompt
from findap_jax.files import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
GOOD = "Step 1: Discount each cash flow.\nStep 2: Sum them to 95.2.\nSelection: [[{a}]]"
BAD = "Step 1: Discount each cash flow.\nStep 2: Sum them to 99.9 by adding 5 + 5 = 11.\nSelection: [[{w}]]"
NONE = "I am not sure."


def _exercises(tmp_path, n):
    path = tmp_path / "ex.jsonl"
    rows = [{"id": f"ex{i}", "question": f"Question {i}?", "answer_choices": {"A": "1", "B": "2", "C": "3"},
             "answer": "ABC"[i % 3], "reference": f"Because. The answer is {'ABC'[i % 3]}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path, n=4, **kw):
    cfg = distill_config()
    cfg.update(dict(exercises=str(_exercises(tmp_path, n)), output=str(tmp_path / "out" / "pairs.jsonl"), k=3,
                    retries=1) | kw)
    return cfg


def _trajectories(prompt, k):
    ans = prompt.split("Question ")[1].split("?")[0]       # exercise index -> gold letter
    a = "ABC"[int(ans) % 3]
    w = "ABC"[(int(ans) + 1) % 3]
    return [GOOD.format(a=a), BAD.format(w=w), NONE][:k]


def scripted_sampler(prompts, k, seeds):
    return [_trajectories(p, k) for p in prompts]


def seeded_sampler(prompts, k, seeds):
    """Trajectories that carry the seed they were sampled with."""
    return [[f"{t}\n(seed {s})" for t in _trajectories(p, k)] for p, s in zip(prompts, seeds)]


def scripted_judge(prompts, attempt, seeds=None):
    out = []
    for p in prompts:
        proposed = p.split("olution:\n" if "Wrong solution" in p else "Proposed answer:\n")[1]
        if "Wrong solution" in p:
            if "5 + 5 = 11" in proposed:
                out.append("```json\n" + json.dumps({
                    "Justification": "arithmetic", "First incorrect step": "Step 2: Sum them to 99.9 by adding 5 + 5 = 11.",
                    "Reasoning up to incorrect": "Step 1: Discount each cash flow.",
                    "Step correction": "Step 2: Sum them to 95.2."}) + "\n```")
            else:   # quotes text that is not in the trajectory: must be dropped
                out.append(json.dumps({"Justification": "x", "First incorrect step": "Step 9: invented",
                                       "Reasoning up to incorrect": "", "Step correction": "Step 9: fixed"}))
        elif attempt == 0 and "95.2" not in proposed and "99.9" in proposed:
            out.append("I think it is wrong")                      # unparseable first time
        else:
            verdict = "correct" if "95.2" in proposed else "wrong"
            out.append(f"{{'Justification': 'checked', 'Correctness': '{verdict}'}} trailing")
    return out


def _read(path):
    return read_jsonl(path)


def test_scripted_judge_gives_exactly_the_expected_pairs(tmp_path):
    cfg = _cfg(tmp_path)
    stats = distill(cfg, scripted_sampler, scripted_judge, judge_name="script", log=lambda *_: None)
    pairs = _read(cfg.output)
    assert [(p["prompt_id"], p["type"]) for p in pairs] == [(f"ex{i}", t) for i in range(4) for t in ("fap", "scp")]
    fap, scp = pairs[0], pairs[1]
    ex0_prompt = policy_prompt({"question": "Question 0?", "scenario": "", "exhibit": "",
                                "choices": {"A": "1", "B": "2", "C": "3"}})
    assert fap["prompt"] == ex0_prompt and fap["chosen"] == GOOD.format(a="A")
    assert fap["rejected"] == BAD.format(w="B") and (fap["chosen_sample"], fap["rejected_sample"]) == (0, 1)
    assert scp["prompt"] == ex0_prompt + "\n\nStep 1: Discount each cash flow.\n\nWhat is the next step?"
    assert scp["chosen"] == "Step 2: Sum them to 95.2."
    assert scp["rejected"] == "Step 2: Sum them to 99.9 by adding 5 + 5 = 11." and scp["judge"] == "script"
    assert stats["prompts"] == 4 and stats["samples"] == 12 and stats["fap_pairs"] == 4 and stats["scp_pairs"] == 4
    assert stats["fap_parse_failures"] == 4                       # BAD's first verdict, once per exercise
    assert stats["scp_dropped"] == {"step_not_verbatim": 4}       # NONE's invented step
    assert stats["rule_correct"] == 4 and stats["judge_rule_agreement"] == 1.0
    assert json.loads((tmp_path / "out" / "pairs.jsonl.stats.json").read_text()) == stats


def test_fap_only_asks_no_step_corrections(tmp_path):
    asked = []

    def judge(prompts, attempt, seeds):
        asked.extend(prompts)
        return scripted_judge(prompts, attempt)
    stats = distill(_cfg(tmp_path, scp=False), scripted_sampler, judge, log=lambda *_: None)
    assert stats["fap_pairs"] == 4 and stats["scp_pairs"] == 0 and stats["scp_dropped"] == {}
    assert not any("Wrong solution" in p for p in asked)


def _recording_judge(calls):
    def judge(prompts, attempt, seeds):
        calls.update({(p, attempt): s for p, s in zip(prompts, seeds)})
        return scripted_judge(prompts, attempt)
    return judge


def test_batching_does_not_change_the_file(tmp_path):
    runs = {}
    for per in (1, 3, 16):
        (tmp_path / str(per)).mkdir()
        cfg = _cfg(tmp_path / str(per), n=7, exercises_per_batch=per)
        calls, sizes = {}, []

        def sampler(prompts, k, seeds):
            sizes.append(len(prompts))
            return seeded_sampler(prompts, k, seeds)
        stats = distill(cfg, sampler, _recording_judge(calls), log=lambda *_: None)
        assert sizes == [min(per, 7 - b) for b in range(0, 7, per)] and stats["prompts"] == 7
        runs[per] = Path(cfg.output).read_bytes(), calls
    assert runs[1][0] == runs[3][0] == runs[16][0]
    assert runs[1][1] == runs[3][1] == runs[16][1]                # each judge prompt's seed, per attempt
    retried = {s for (p, a), s in runs[3][1].items() if a == 1}
    assert len(retried) == 7                                       # BAD's retry, one seed per exercise
    pairs = _read(tmp_path / "3" / "out" / "pairs.jsonl")
    fap = [p for p in pairs if p["type"] == "fap"]
    assert len(fap) == 7
    for p in fap:                                                  # sampled with its own exercise's seed
        tag = f"(seed {exercise_seed(0, p['prompt_id'])})"
        assert p["chosen"].endswith(tag) and p["rejected"].endswith(tag)


def test_interrupted_run_resumes_to_the_same_file(tmp_path):
    (tmp_path / "a").mkdir()
    full = _cfg(tmp_path / "a", n=7, exercises_per_batch=1)
    distill(full, seeded_sampler, scripted_judge, log=lambda *_: None)
    for resume_per in (3, 2):
        (tmp_path / f"b{resume_per}").mkdir()
        part = _cfg(tmp_path / f"b{resume_per}", n=7, exercises_per_batch=3)
        stats = distill(part, seeded_sampler, scripted_judge, log=lambda *_: None, stop_after=4)
        assert stats["prompts"] == 4                               # stopped inside the second batch
        with open(part.output, "a") as f:      # a crash after writing pairs, before the progress line
            f.write(json.dumps({"prompt_id": "ex4", "type": "fap", "prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
        sampled = []

        def sampler(prompts, k, seeds):
            sampled.extend(p.split("Question ")[1].split("?")[0] for p in prompts)
            return seeded_sampler(prompts, k, seeds)
        part.exercises_per_batch = resume_per
        distill(part, sampler, scripted_judge, log=lambda *_: None)
        assert sampled == ["4", "5", "6"]                          # only the unfinished exercises
        assert Path(part.output).read_bytes() == Path(full.output).read_bytes()


def separator_sampler(prompts, k, seeds):
    """Trajectories holding raw line separators (json.dumps(ensure_ascii=False) keeps them)."""
    return [[f"{t}\u2028(seed {s})\x85" for t in _trajectories(p, k)] for p, s in zip(prompts, seeds)]


@pytest.mark.parametrize("torn", ["output", "progress"])
def test_a_torn_write_resumes_to_the_same_file(tmp_path, torn):
    (tmp_path / "a").mkdir()
    full = _cfg(tmp_path / "a", n=5, exercises_per_batch=1)
    distill(full, separator_sampler, scripted_judge, log=lambda *_: None)
    (tmp_path / "b").mkdir()
    part = _cfg(tmp_path / "b", n=5, exercises_per_batch=1)
    distill(part, separator_sampler, scripted_judge, log=lambda *_: None, stop_after=2)
    pair = json.dumps({"prompt_id": "ex2", "type": "fap", "prompt": "p", "chosen": "\u00e9", "rejected": "r"},
                      ensure_ascii=False) + "\n"
    stats = json.dumps({"id": "ex2", "samples": 3}) + "\n"
    with open(part.output, "ab") as f:          # killed inside a UTF-8 character, or after the pair
        f.write(pair.encode()[:-6] if torn == "output" else pair.encode())
    if torn == "progress":
        with open(part.output + ".progress.jsonl", "ab") as f:
            f.write(stats.encode()[:-5])
    assert distill(part, separator_sampler, scripted_judge, log=lambda *_: None)["prompts"] == 5
    assert Path(part.output).read_bytes() == Path(full.output).read_bytes()
    assert "\u2028" in Path(full.output).read_text(encoding="utf-8")


def test_crash_inside_a_batch_writes_none_of_it(tmp_path):
    (tmp_path / "a").mkdir()
    full = _cfg(tmp_path / "a", n=5, exercises_per_batch=2)
    distill(full, seeded_sampler, scripted_judge, log=lambda *_: None)
    (tmp_path / "b").mkdir()
    part = _cfg(tmp_path / "b", n=5, exercises_per_batch=2)

    def crashing_judge(prompts, attempt, seeds):
        if any("Question 3?" in p for p in prompts):
            raise KeyboardInterrupt
        return scripted_judge(prompts, attempt)
    with pytest.raises(KeyboardInterrupt):
        distill(part, seeded_sampler, crashing_judge, log=lambda *_: None)
    ids = [json.loads(ln)["id"] for ln in Path(part.output + ".progress.jsonl").read_text().splitlines()]
    assert ids == ["ex0", "ex1"]
    distill(part, seeded_sampler, scripted_judge, log=lambda *_: None)
    assert Path(part.output).read_bytes() == Path(full.output).read_bytes()


def test_bad_exercise_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "q", "answer_choices": {"A": "1", "B": "2"}, "answer": "D"}) + "\n")
    cfg = _cfg(tmp_path, exercises=str(bad))
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'answer': 'D' is not one of the choices A, B"):
        distill(cfg, scripted_sampler, scripted_judge, log=lambda *_: None)
    assert not Path(cfg.output).exists()


@pytest.mark.slow
def test_real_tiny_models_run_and_their_pairs_train_an_rpo_step(tmp_path, tiny_chat_model):
    from findap_jax import load_pretrained
    from findap_jax.distill.pipeline import model_judge, model_sampler
    from findap_jax.train.trainer import Trainer

    model_dir = tiny_chat_model
    model, tok = load_pretrained(model_dir)
    cfg = _cfg(tmp_path, k=2, max_new_tokens=12, judge_max_new_tokens=12, limit=2, temperature=1.0)
    # the real tiny model as policy and judge: it writes noise, so every reply is counted
    # as unparseable (first try + 1 retry) and no pair can be made - but nothing crashes
    stats = distill(cfg, model_sampler(model, tok, cfg), model_judge(model, tok, cfg), log=lambda *_: None)
    assert stats["prompts"] == 2 and stats["samples"] == 4 and stats["fap_parse_failures"] == 8
    assert stats["judged"] == 0 and stats["fap_pairs"] == stats["scp_pairs"] == 0

    # the real policy's trajectories with a judge that calls each exercise's first sample
    # correct and faults the first line of every other one
    def judge(prompts, attempt, seeds):
        if "Wrong solution" in prompts[0]:
            out = []
            for p in prompts:
                proposed = p.split("Wrong solution:\n")[1].split("\n\nFind the first step")[0]
                out.append(json.dumps({"Justification": "j", "First incorrect step": (proposed.splitlines() or [""])[0],
                                       "Reasoning up to incorrect": "", "Step correction": "Step 1: recompute."}))
            return out
        return [json.dumps({"Justification": "j", "Correctness": "correct" if i == 0 else "wrong"})
                for i in range(len(prompts))]

    out = tmp_path / "real" / "pairs.jsonl"
    cfg2 = _cfg(tmp_path, k=3, max_new_tokens=12, limit=2, temperature=1.0, output=str(out))
    stats2 = distill(cfg2, model_sampler(model, tok, cfg2), judge, log=lambda *_: None)
    assert stats2["fap_pairs"] >= 1 and stats2["scp_pairs"] >= 1

    rpo = load_config(str(ROOT / "configs/rpo.py"), [
        f"model.path={model_dir}", "data.seq_len=512", "data.batch_size=8", "data.mixture=distilled",
        f"data.tasks={{'distilled': {{'kind': 'preference', 'train': '{out}'}}}}", "train.steps=1",
        "run.checkpoint_every=0", "run.export_final=false", "run.log_every=1"])
    history = Trainer(rpo, tmp_path / "train", log=lambda *_: None).run()
    assert len(history) == 1 and history[0]["loss"] > 0 and "rewards/accuracies" in history[0]
