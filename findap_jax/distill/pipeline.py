"""`findap-jax distill`: sample k trajectories per exercise from the policy, judge them with
a generative reward model, write FAP and SCP preference pairs.

Per exercise: pairs are appended to `output`, then a line to `output.progress.jsonl`; a
rerun drops pairs of an unfinished exercise and continues with it, and every exercise's
sampling seed depends only on its id, so an interrupted run ends with the same file as an
uninterrupted one. `output.stats.json` sums the progress lines.
"""
from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

from findap_jax.distill.judge import FAP_KEYS, SCP_KEYS, ask
from findap_jax.distill.pairs import fap_pairs, scp_pair
from findap_jax.distill.prompts import FAP_JUDGE, SCP_JUDGE, exercise_text, load_exercises, policy_prompt
from findap_jax.eval.extract import extract_choice

Sampler = Callable[[str, int, int], list[str]]          # (prompt, k, seed) -> k trajectories
Judge = Callable[[list[str], int], list[str]]            # (prompts, attempt) -> replies


def exercise_seed(seed: int, ex_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(ex_id.encode())) % (2 ** 31)


def _restart(output: Path, progress: Path) -> set[str]:
    """Finished exercise ids; pairs of unfinished ones are removed from the output."""
    done = set()
    if progress.exists():
        for line in progress.read_text().splitlines():
            if line.strip():
                done.add(json.loads(line)["id"])
    if output.exists():
        keep = [ln for ln in output.read_text().splitlines(keepends=True)
                if ln.strip() and json.loads(ln)["prompt_id"] in done]
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text("".join(keep))
        os.replace(tmp, output)
    return done


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def process_exercise(ex: dict, sampler: Sampler, judge: Judge, cfg, judge_name: str) -> tuple[list[dict], dict]:
    """Pairs and per-exercise stats for one exercise."""
    prompt = policy_prompt(ex)
    texts = sampler(prompt, cfg.k, exercise_seed(cfg.seed, ex["id"]))
    letters = list(ex["choices"])
    samples = []
    for i, t in enumerate(texts):
        pick = extract_choice(t, len(letters))
        samples.append({"sample": i, "text": t.strip(),
                        "rule": "correct" if pick is not None and letters[pick] == ex["answer"] else "wrong"})
    question = exercise_text(ex)
    fap_prompts = [FAP_JUDGE.format(question=question, reference=ex["reference"], proposed=s["text"])
                   for s in samples]
    verdicts, fap_fail = ask(judge, fap_prompts, FAP_KEYS, cfg.retries)
    for s, v in zip(samples, verdicts):
        s["judge"] = v["Correctness"] if v else None
        if cfg.verdict == "rule":
            s["verdict"] = s["rule"]
        elif cfg.verdict == "both":
            s["verdict"] = s["rule"] if s["judge"] == s["rule"] else None
        else:
            s["verdict"] = s["judge"]
    pairs = fap_pairs(prompt, samples, cfg.max_fap_pairs)
    wrong = [s for s in samples if s["verdict"] == "wrong"] if cfg.scp else []   # scp=False: FAP only
    scp_prompts = [SCP_JUDGE.format(question=question, reference=ex["reference"], proposed=s["text"])
                   for s in wrong]
    replies, scp_fail = ask(judge, scp_prompts, SCP_KEYS, cfg.retries) if wrong else ([], 0)
    dropped: dict[str, int] = {}
    for s, r in zip(wrong, replies):
        if r is None:
            continue
        pair, why = scp_pair(prompt, s, r)
        if pair is None:
            dropped[why] = dropped.get(why, 0) + 1
        else:
            pairs.append(pair)
    for p in pairs:
        p.update(prompt_id=ex["id"], judge=judge_name)
    judged = [s for s in samples if s["judge"] is not None]
    stats = {"id": ex["id"], "samples": len(samples),
             "rule_correct": sum(s["rule"] == "correct" for s in samples),
             "judge_correct": sum(s["judge"] == "correct" for s in samples),
             "judged": len(judged), "judge_rule_agree": sum(s["judge"] == s["rule"] for s in judged),
             "fap_parse_failures": fap_fail, "scp_parse_failures": scp_fail,
             "fap_pairs": sum(p["type"] == "fap" for p in pairs),
             "scp_pairs": sum(p["type"] == "scp" for p in pairs), "scp_dropped": dropped}
    return pairs, stats


def summarize(progress: Path) -> dict:
    rows = [json.loads(ln) for ln in progress.read_text().splitlines() if ln.strip()] if progress.exists() else []
    out = {"prompts": len(rows)}
    for k in ("samples", "rule_correct", "judge_correct", "judged", "judge_rule_agree",
              "fap_parse_failures", "scp_parse_failures", "fap_pairs", "scp_pairs"):
        out[k] = sum(r[k] for r in rows)
    out["scp_dropped"] = {}
    for r in rows:
        for k, v in r["scp_dropped"].items():
            out["scp_dropped"][k] = out["scp_dropped"].get(k, 0) + v
    out["correct_rate"] = out["judge_correct"] / out["judged"] if out["judged"] else 0.0
    out["judge_rule_agreement"] = out["judge_rule_agree"] / out["judged"] if out["judged"] else 0.0
    return out


def distill(cfg, sampler: Sampler, judge: Judge, judge_name: str = "judge", log=print,
            stop_after: int | None = None) -> dict:
    """Run over the configured exercises; returns the stats. `stop_after` ends the run after
    that many newly finished exercises (tests use it to simulate an interruption)."""
    if not cfg.output:
        raise ValueError("output: required (the preference jsonl to write)")
    if cfg.verdict not in ("judge", "rule", "both"):
        raise ValueError(f"verdict must be judge, rule or both, got {cfg.verdict!r}")
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    progress = output.with_name(output.name + ".progress.jsonl")
    exercises = load_exercises(cfg.exercises or None)
    if cfg.limit:
        exercises = exercises[:cfg.limit]
    done = _restart(output, progress)
    finished = 0
    for ex in exercises:
        if ex["id"] in done:
            continue
        pairs, stats = process_exercise(ex, sampler, judge, cfg, judge_name)
        _append(output, pairs)
        _append(progress, [stats])
        log(f"{ex['id']}: {stats['rule_correct']}/{stats['samples']} correct (rule), "
            f"{stats['fap_pairs']} FAP + {stats['scp_pairs']} SCP pairs")
        finished += 1
        if stop_after is not None and finished >= stop_after:
            break
    summary = summarize(progress)
    tmp = output.with_name(output.name + ".stats.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, output.with_name(output.name + ".stats.json"))
    return summary


def _chat_generate(model, tokenizer, prompts, max_new_tokens, **kw) -> list[str]:
    """Chat-templated generation; prompts longer than the context keep their end."""
    from findap_jax.generation.sampler import encode_prompts, fit_prompts, generate_from_ids
    encoded, _ = fit_prompts(model, encode_prompts(tokenizer, prompts, True, None), max_new_tokens)
    return generate_from_ids(model, tokenizer, encoded, max_new_tokens=max_new_tokens, **kw)


def model_sampler(model, tokenizer, cfg) -> Sampler:
    def sample(prompt: str, k: int, seed: int) -> list[str]:
        return _chat_generate(model, tokenizer, [prompt] * k, cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, seed=seed, batch_size=k)
    return sample


def model_judge(model, tokenizer, cfg) -> Judge:
    """Greedy first; a retry samples (temperature 0.7) with a seed that depends on the attempt."""
    def judge(prompts: list[str], attempt: int) -> list[str]:
        return _chat_generate(model, tokenizer, prompts, cfg.judge_max_new_tokens,
                              temperature=0.0 if attempt == 0 else 0.7, seed=cfg.seed + attempt,
                              batch_size=cfg.batch_size)
    return judge


def run_distill(cfg, log=print) -> dict:
    from findap_jax.checkpoints.loader import load_pretrained
    policy, ptok = load_pretrained(cfg.policy, dtype=cfg.dtype, chat_format=cfg.chat_format)
    if cfg.judge and cfg.judge != cfg.policy:
        judge_model, jtok = load_pretrained(cfg.judge, dtype=cfg.dtype, chat_format=cfg.chat_format)
    else:
        judge_model, jtok = policy, ptok
    stats = distill(cfg, model_sampler(policy, ptok, cfg), model_judge(judge_model, jtok, cfg),
                    judge_name=str(cfg.judge or cfg.policy), log=log)
    log(json.dumps(stats))
    return stats
