"""`findap-jax distill`: sample k trajectories per exercise from the policy, judge them with
a generative reward model, write FAP and SCP preference pairs.

Exercises go in batches of `exercises_per_batch` (fixed chunks of the file order): one
decode batch for all their trajectories, one judge call for all FAP prompts, one for all
SCP prompts. Then, per exercise in file order, its pairs are appended to `output` and a
line to `output.progress.jsonl`; a rerun drops pairs of an unfinished exercise and
continues with it. Every trajectory row and judge prompt samples from its own seed,
derived from the exercise id and `seed` only, so neither the batch size nor where a
rerun resumes changes the file. `output.stats.json` sums the progress lines.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from findap_jax.distill.judge import FAP_KEYS, SCP_KEYS, ask_each
from findap_jax.distill.pairs import fap_pairs, scp_pair
from findap_jax.distill.prompts import FAP_JUDGE, SCP_JUDGE, exercise_text, load_exercises, policy_prompt
from findap_jax.eval.extract import extract_choice
from findap_jax.files import end_jsonl_cleanly, jsonl_lines, read_jsonl, write_text_atomic

# (prompts, k, exercise seeds) -> k trajectories per prompt
Sampler = Callable[[list[str], int, list[int]], list[list[str]]]
# (prompts, attempt, per-prompt seeds) -> replies
Judge = Callable[[list[str], int, list[int]], list[str]]


def exercise_seed(seed: int, ex_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(ex_id.encode())) % (2 ** 31)


def derive_seed(seed: int, *parts) -> int:
    """A seed for one row from a parent seed and labels (sample index, judge prompt, attempt)."""
    return zlib.crc32(":".join(map(str, (seed, *parts))).encode()) % (2 ** 31)


def _restart(output: Path, progress: Path) -> set[str]:
    """Finished exercise ids; pairs of unfinished ones are removed from the output. A line
    torn by a kill mid-append is dropped from either file (its exercise is unfinished)."""
    done = set()
    if progress.exists():
        end_jsonl_cleanly(progress)
        done = {_field(progress, i, rec, "id") for i, rec in jsonl_lines(progress)}
    if output.exists():
        end_jsonl_cleanly(output)
        keep = [rec for i, rec in jsonl_lines(output) if _field(output, i, rec, "prompt_id") in done]
        write_text_atomic(output, "".join(_line(r) for r in keep))
    return done


def _field(path: Path, i: int, rec, name: str) -> str:
    if not isinstance(rec, dict) or not isinstance(rec.get(name), str):
        raise ValueError(f"{path}:{i}: a record without its {name!r}; delete the file to distil again")
    return rec[name]


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(_line(r))
        f.flush()
        os.fsync(f.fileno())


def _set_verdicts(samples: list[dict], verdicts: list, cfg) -> None:
    for s, v in zip(samples, verdicts):
        s["judge"] = v["Correctness"] if v else None
        if cfg.verdict == "rule":
            s["verdict"] = s["rule"]
        elif cfg.verdict == "both":
            s["verdict"] = s["rule"] if s["judge"] == s["rule"] else None
        else:
            s["verdict"] = s["judge"]


def _split(flat: list, sizes: list[int]) -> list[list]:
    out, i = [], 0
    for n in sizes:
        out.append(flat[i:i + n])
        i += n
    return out


def process_batch(exs: list[dict], sampler: Sampler, judge: Judge, cfg,
                  judge_name: str) -> list[tuple[list[dict], dict]]:
    """(pairs, stats) per exercise: one sampling call, one FAP and one SCP judge call."""
    prompts = [policy_prompt(ex) for ex in exs]
    seeds = [exercise_seed(cfg.seed, ex["id"]) for ex in exs]
    all_texts = sampler(prompts, cfg.k, seeds)
    all_samples, questions = [], [exercise_text(ex) for ex in exs]
    for ex, texts in zip(exs, all_texts):
        letters = list(ex["choices"])
        samples = []
        for i, t in enumerate(texts):
            pick = extract_choice(t, len(letters))
            samples.append({"sample": i, "text": t.strip(),
                            "rule": "correct" if pick is not None and letters[pick] == ex["answer"] else "wrong"})
        all_samples.append(samples)

    def judge_all(template, keys, kind, groups):
        flat = [(e, s) for e, g in enumerate(groups) for s in g]
        texts = [template.format(question=questions[e], reference=exs[e]["reference"], proposed=s["text"])
                 for e, s in flat]
        replies, fails = ask_each(judge, texts, keys, cfg.retries,
                                  [derive_seed(seeds[e], kind, s["sample"]) for e, s in flat])
        sizes = [len(g) for g in groups]
        return _split(replies, sizes), [sum(f) for f in _split(fails, sizes)]

    verdicts, fap_fail = judge_all(FAP_JUDGE, FAP_KEYS, "fap", all_samples)
    wrongs = []
    for samples, v in zip(all_samples, verdicts):
        _set_verdicts(samples, v, cfg)
        wrongs.append([s for s in samples if s["verdict"] == "wrong"] if cfg.scp else [])  # scp=False: FAP only
    scp_replies, scp_fail = (judge_all(SCP_JUDGE, SCP_KEYS, "scp", wrongs) if any(wrongs)
                             else ([[] for _ in exs], [0] * len(exs)))
    out = []
    for e, ex in enumerate(exs):
        samples = all_samples[e]
        pairs = fap_pairs(prompts[e], samples, cfg.max_fap_pairs)
        dropped: dict[str, int] = {}
        for s, r in zip(wrongs[e], scp_replies[e]):
            if r is None:
                continue
            pair, why = scp_pair(prompts[e], s, r)
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
                 "fap_parse_failures": fap_fail[e], "scp_parse_failures": scp_fail[e],
                 "fap_pairs": sum(p["type"] == "fap" for p in pairs),
                 "scp_pairs": sum(p["type"] == "scp" for p in pairs), "scp_dropped": dropped}
        out.append((pairs, stats))
    return out


def summarize(progress: Path) -> dict:
    rows = read_jsonl(progress) if progress.exists() else []
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
    out["rule_correct_rate"] = out["rule_correct"] / out["samples"] if out["samples"] else 0.0
    out["judged_rate"] = out["judged"] / out["samples"] if out["samples"] else 0.0
    # wall time: each exercise carries its share of its batch's seconds (summed over resumes)
    out["seconds"] = round(sum(r.get("seconds", 0.0) for r in rows), 1)
    out["prompts_per_s"] = round(len(rows) / out["seconds"], 4) if out["seconds"] else 0.0
    return out


def distill(cfg, sampler: Sampler, judge: Judge, judge_name: str = "judge", log=print,
            stop_after: int | None = None) -> dict:
    """Run over the configured exercises; returns the stats. `stop_after` ends the run after
    that many newly finished exercises, even within a batch (tests use it to simulate an
    interruption)."""
    if not cfg.output:
        raise ValueError("output: required (the preference jsonl to write)")
    if cfg.verdict not in ("judge", "rule", "both"):
        raise ValueError(f"verdict must be judge, rule or both, got {cfg.verdict!r}")
    per = int(cfg.exercises_per_batch)
    if per < 1:
        raise ValueError(f"exercises_per_batch must be at least 1, got {per}")
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    progress = output.with_name(output.name + ".progress.jsonl")
    exercises = load_exercises(cfg.exercises or None)
    if cfg.limit:
        exercises = exercises[:cfg.limit]
    done = _restart(output, progress)
    finished = 0
    for b in range(0, len(exercises), per):            # fixed chunks: a rerun batches as before
        batch = [ex for ex in exercises[b:b + per] if ex["id"] not in done]
        if not batch:
            continue
        t0 = time.time()
        results = process_batch(batch, sampler, judge, cfg, judge_name)
        share = round((time.time() - t0) / len(batch), 2)
        for ex, (pairs, stats) in zip(batch, results):
            if stop_after is not None and finished >= stop_after:
                break
            stats["seconds"] = share
            _append(output, pairs)
            _append(progress, [stats])
            log(f"{ex['id']}: {stats['rule_correct']}/{stats['samples']} correct (rule), "
                f"{stats['fap_pairs']} FAP + {stats['scp_pairs']} SCP pairs")
            finished += 1
        if stop_after is not None and finished >= stop_after:
            break
    summary = summarize(progress)
    write_text_atomic(output.with_name(output.name + ".stats.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def _chat_generate(model, tokenizer, prompts, max_new_tokens, **kw) -> list[str]:
    """Chat-templated generation; prompts longer than the context keep their end."""
    from findap_jax.generation.sampler import encode_prompts, fit_prompts, generate_from_ids
    encoded, _ = fit_prompts(model, encode_prompts(tokenizer, prompts, True, None), max_new_tokens)
    return generate_from_ids(model, tokenizer, encoded, max_new_tokens=max_new_tokens, **kw)


def model_sampler(model, tokenizer, cfg) -> Sampler:
    """All prompts' k trajectories in one decode batch; row j of a prompt with exercise seed
    s samples from derive_seed(s, "sample", j)."""
    def sample(prompts: list[str], k: int, seeds: list[int]) -> list[list[str]]:
        rows = [p for p in prompts for _ in range(k)]
        row_seeds = [derive_seed(s, "sample", j) for s in seeds for j in range(k)]
        texts = _chat_generate(model, tokenizer, rows, cfg.max_new_tokens, temperature=cfg.temperature,
                               top_p=cfg.top_p, seeds=row_seeds, batch_size=max(1, len(rows)))
        return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]
    return sample


def model_judge(model, tokenizer, cfg) -> Judge:
    """Greedy first; a retry samples (temperature 0.7), each prompt from its own seed mixed
    with the attempt (cfg.seed + attempt for the whole call when no seeds are given)."""
    def judge(prompts: list[str], attempt: int, seeds: list[int] | None = None) -> list[str]:
        row_seeds = None if seeds is None or attempt == 0 else [derive_seed(s, attempt) for s in seeds]
        return _chat_generate(model, tokenizer, prompts, cfg.judge_max_new_tokens,
                              temperature=0.0 if attempt == 0 else 0.7, seed=cfg.seed + attempt,
                              seeds=row_seeds, batch_size=cfg.batch_size)
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
