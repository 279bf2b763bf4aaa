"""Run evaluation tasks on a model: prompts, scoring (log-likelihood or generation +
extraction), metrics, and the per-example predictions that back every number."""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from findap_jax.eval.loglik import encode_pair, score
from findap_jax.eval.scoring import JUDGE_PRIMARY, PRIMARY, example_score, extract, task_metrics
from findap_jax.eval.tasks import EvalTask


def messages(task: EvalTask, mode: str, row: dict, system: str | None = None) -> list[dict]:
    system = system if system is not None else task.system
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": task.prompt(mode, row)}]


def prompt_text(tokenizer, task: EvalTask, mode: str, row: dict, chat: bool, system=None) -> str:
    """The exact text the model conditions on: the chat-templated user turn plus the
    assistant header (chat=True), or the bare prompt."""
    if chat:
        return tokenizer.apply_chat_template(messages(task, mode, row, system), add_generation_prompt=True)
    return task.prompt(mode, row)


def _loglik(model, tokenizer, task, rows, prompts, chat, opts):
    add_bos = bool(tokenizer.add_bos) and not chat
    reqs, starts = [], []
    for row, text in zip(rows, prompts):
        starts.append(len(reqs))
        for c, choice in enumerate(row["choices"]):
            try:   # lm-eval's target delimiter: a space after a bare prompt, none after a chat header
                reqs.append(encode_pair(tokenizer, text, choice if chat else " " + choice, add_bos=add_bos))
            except ValueError as e:
                raise ValueError(f"{row['_where']}: field 'choices'[{c}]: {e}") from None
    scored, stats = score(model, reqs, row_len=opts.get("row_len", 256),
                          rows_per_batch=opts.get("rows_per_batch", 8), mesh=opts.get("mesh"))
    preds = []
    for r, row in enumerate(rows):
        lls = scored[starts[r]:starts[r] + len(row["choices"])]
        ll = np.array([s.logprob for s in lls])
        norm = ll / np.array([max(len(c.encode("utf-8")), 1) for c in row["choices"]])
        preds.append({"pred": int(np.argmax(ll)), "pred_norm": int(np.argmax(norm)),
                      "prediction": row["choices"][int(np.argmax(ll))],
                      "loglik": [round(float(x), 5) for x in ll],
                      "greedy": [s.greedy for s in lls]})
    return preds, stats


def _generate(model, tokenizer, task, rows, mode, chat, opts):
    from findap_jax.generation.sampler import encode_prompts, fit_prompts, generate_from_ids
    system = opts.get("system")
    prompts = ([messages(task, mode, row, system) for row in rows] if chat
               else [task.prompt(mode, row) for row in rows])
    new_tokens = opts.get("max_new_tokens") or task.max_new_tokens
    encoded, truncated = fit_prompts(model, encode_prompts(tokenizer, prompts, chat, None), new_tokens)
    progress = opts.get("progress")   # eval.progress.GenerationProgress: resume a killed run
    keys = [progress.key(e, new_tokens, task.stop) for e in encoded] if progress else []
    todo = [i for i in range(len(rows)) if not progress or keys[i] not in progress.done]
    on_batch = None
    if progress:
        on_batch = lambda idx, texts: progress.append([keys[todo[j]] for j in idx], texts)  # noqa: E731
    filled = {"prompt_tokens": 0, "prefill_tokens": 0}   # of this run's rows; prefill counts padding
    new = generate_from_ids(model, tokenizer, [encoded[i] for i in todo], max_new_tokens=new_tokens,
                            stop=list(task.stop), batch_size=opts.get("batch_size", 16), on_batch=on_batch,
                            stats=filled)
    outs = dict(zip(todo, new))
    texts = [outs[i] if i in outs else progress.done[keys[i]] for i in range(len(rows))]
    preds = [{"pred": extract(task, row, text), "prediction": text} for row, text in zip(rows, texts)]
    return preds, {"truncated": truncated, "resumed": len(rows) - len(todo), **filled}


def model_judge(model, tokenizer, batch_size: int = 16):
    """A judge for judge mode: greedy chat-templated replies of a local model (prompts too
    long for its context keep their end)."""
    from findap_jax.eval.openqa import JUDGE_MAX_NEW_TOKENS
    from findap_jax.generation.sampler import encode_prompts, fit_prompts, generate_from_ids

    budget = min(JUDGE_MAX_NEW_TOKENS, max(1, model.cfg.max_position_embeddings // 2))

    def judge(prompts: list[str]) -> list[str]:
        encoded, _ = fit_prompts(model, encode_prompts(tokenizer, prompts, True, None), budget)
        return generate_from_ids(model, tokenizer, encoded, max_new_tokens=budget, batch_size=batch_size)
    return judge


def run_task(model, tokenizer, task: EvalTask, rows: Sequence[dict], *, mode: str | None = None,
             chat: bool = True, **opts) -> tuple[dict, list[dict]]:
    """Score one task. Returns (metrics with n, mode and examples_per_s; prediction records).
    Judge mode needs opts["judge"]: a callable(list of prompts) -> list of replies.
    opts["progress"] (generation modes): a GenerationProgress whose rows are not regenerated."""
    mode = mode or task.mode
    if mode not in task.modes:
        raise ValueError(f"task {task.name} has no {mode!r} mode (modes: {', '.join(task.modes)})")
    if mode == "loglik" and not task.needs_choices:
        raise ValueError(f"task {task.name}: log-likelihood scoring needs choices")
    if mode == "judge" and opts.get("judge") is None:
        raise ValueError(f"task {task.name}: judge mode needs a judge model (config key `judge`)")
    prompts = [prompt_text(tokenizer, task, mode, row, chat, opts.get("system")) for row in rows]
    t0 = time.perf_counter()
    if mode == "loglik":
        preds, stats = _loglik(model, tokenizer, task, rows, prompts, chat, opts)
    else:
        preds, stats = _generate(model, tokenizer, task, rows, mode, chat, opts)
    if mode == "judge":
        from findap_jax.eval.openqa import judge_answers
        for pr, verdict in zip(preds, judge_answers(opts["judge"], rows, [p["pred"] for p in preds])):
            pr.update(verdict)
    seconds = time.perf_counter() - t0
    result = task_metrics(task, rows, preds, mode)
    primary = JUDGE_PRIMARY if mode == "judge" else PRIMARY[task.answer_type]
    fresh = len(rows) - stats.get("resumed", 0)   # examples/s counts rows scored in this run
    result.update(n=len(rows), mode=mode, primary=primary, seconds=round(seconds, 2),
                  examples_per_s=round(fresh / max(seconds, 1e-9), 3), **stats)
    records = []
    for row, text, pr in zip(rows, prompts, preds):
        rec = {"id": row["id"], "prompt": text, "prediction": pr["prediction"], "pred": pr["pred"],
               "gold": row["gold"] if task.needs_choices else row["answer"],
               "score": example_score(task, row, pr["pred"])}
        if mode == "loglik":
            rec.update(choices=row["choices"], loglik=pr["loglik"], greedy=pr["greedy"],
                       pred_norm=pr["pred_norm"])
        if mode == "judge":
            rec.update(score=float(pr["judge"] == "correct"), judge=pr["judge"], judge_reply=pr["judge_reply"])
        records.append(rec)
    return result, records
