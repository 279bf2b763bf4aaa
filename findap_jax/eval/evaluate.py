"""`findap-jax eval`: load a model, run the configured tasks, write results.json,
predictions/<task>.jsonl, report.md (capability table) and, given other runs, a chart.

Outputs are written atomically and results.json is merged, so re-running one task keeps
the other tasks' numbers and a crash never leaves a half-written file; generation tasks
resume from their per-batch progress files (eval/progress.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from findap_jax.config import comma_list
from findap_jax.eval.progress import GenerationProgress, model_fingerprint, progress_path, result_file_name
from findap_jax.eval.report import capability_table, compare_chart, read_results
from findap_jax.eval.runner import model_judge, run_task
from findap_jax.eval.tasks import get_task, load_rows
from findap_jax.files import write_text_atomic


def parse_tasks(spec) -> list[tuple[str, object, str]]:
    """'fpb,cfa_mini:loglik' -> [(result key, task, mode)]; the key carries the mode only
    when it is not the task's default."""
    names = comma_list(spec)
    if not names:
        raise ValueError("tasks: no task given")
    out = []
    for name in names:
        base, _, mode = name.partition(":")
        task = get_task(base)
        mode = mode or task.mode
        if mode not in task.modes:
            raise ValueError(f"tasks: {base} has no {mode!r} mode (modes: {', '.join(task.modes)})")
        out.append((base if mode == task.mode else f"{base}:{mode}", task, mode))
    return out


def resolve_eval_model(path: str) -> str:
    """A `findap-jax train` workdir evaluates its final export."""
    from findap_jax.checkpoints.orbax_io import is_orbax_export
    p = Path(path)
    if p.is_dir() and is_orbax_export(p / "final"):
        return str(p / "final")
    return path


def load_judge(cfg, model, tokenizer, tasks, mesh=None):
    """(judge callable or None, its name) for the `task:judge` entries of cfg.tasks: the model
    at cfg.judge (any load_pretrained path), or the evaluated model itself when it is ""."""
    spec = cfg.get("judge", "")
    if not isinstance(spec, str):
        raise ValueError(f"judge: expected a model path (string), got {spec!r}")
    if not any(mode == "judge" for _, _, mode in tasks):
        if spec:
            raise ValueError(f"judge: {spec!r} is set but no task runs in judge mode "
                             f"(e.g. financebench:judge; tasks={cfg.tasks})")
        return None, ""
    if spec:
        from findap_jax.checkpoints.loader import load_pretrained
        model, tokenizer = load_pretrained(resolve_eval_model(spec), dtype=cfg.get("dtype", "float32"), mesh=mesh)
    return model_judge(model, tokenizer, cfg.batch_size), spec or "self (the evaluated model)"


def evaluate_model(model, tokenizer, cfg, mesh=None, log=print, progress_dir=None,
                   fingerprint: str = "") -> tuple[dict, dict]:
    """Run cfg.tasks on an in-memory model (also used inside training).
    Returns ({key: metrics}, {key: prediction records}). With `progress_dir`, generation
    tasks append each batch's answers there and reuse the ones a killed run left."""
    files = dict(cfg.files)
    tasks = parse_tasks(cfg.tasks)
    for name in files:
        if name not in {t.name for _, t, _ in tasks}:
            raise KeyError(f"files: {name!r} is not among the tasks run ({cfg.tasks})")
    judge, judge_name = load_judge(cfg, model, tokenizer, tasks, mesh)   # before the long part
    results, predictions = {}, {}
    for key, task, mode in tasks:
        rows = load_rows(task, cfg.data_dir, files.get(task.name), cfg.limit, cfg.sample_seed)
        progress = None
        if progress_dir is not None and mode != "loglik":
            progress = GenerationProgress(progress_path(progress_dir, key), fingerprint)
            if progress.done:
                log(f"eval {key}: resuming, {len(progress.done)} answers in {progress.path}")
        res, recs = run_task(model, tokenizer, task, rows, mode=mode, chat=cfg.chat, system=cfg.system,
                             batch_size=cfg.batch_size, rows_per_batch=cfg.rows_per_batch,
                             row_len=cfg.row_len, max_new_tokens=cfg.max_new_tokens, mesh=mesh,
                             judge=judge, progress=progress)
        primary = res["primary"]
        res.update(split=task.split, capability=task.capability, domain=task.domain)
        if mode == "judge":
            res["judge"] = judge_name
        results[key], predictions[key] = res, recs
        log(f"eval {key}: {primary}={res[primary]:.4f} n={res['n']} ({res['examples_per_s']:.2f} ex/s, {mode})")
    return results, predictions


def write_outputs(out_dir: str | Path, results: dict, predictions: dict, model: str | None = None,
                  log=print) -> dict:
    """Merge into out_dir/results.json, write each task's predictions and report.md.
    Returns the merged results. With `model` (its fingerprint), each result records it and
    the results of another model already in the file are dropped, so a report never shows
    two models' numbers as one's."""
    out = Path(out_dir)
    merged = {}
    if (out / "results.json").is_file():
        merged = read_results(out)
    if model is not None:
        stale = sorted(k for k, r in merged.items() if isinstance(r, dict) and r.get("model", model) != model)
        gone = [k for k in stale if k not in results]   # the rest this run replaces anyway
        if gone:
            log(f"{out}/results.json: dropping {', '.join(gone)}, evaluated on another model (or its files changed)")
        merged = {k: r for k, r in merged.items() if k not in stale}
        results = {k: {**r, "model": model} for k, r in results.items()}
    for key, recs in predictions.items():
        name = result_file_name(key)
        write_text_atomic(out / "predictions" / f"{name}.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    merged.update(results)
    write_text_atomic(out / "results.json", json.dumps(merged, indent=2, sort_keys=True) + "\n")
    write_text_atomic(out / "report.md", "# FinEval results\n\n" + capability_table(merged))
    for key in predictions:   # written: the resume files are no longer needed
        progress_path(out, key).unlink(missing_ok=True)
    return merged


def run_eval(cfg, log=print) -> dict:
    """The CLI job: load, evaluate, write, chart."""
    from findap_jax.checkpoints.loader import load_pretrained
    from findap_jax.parallel import make_mesh

    if not cfg.output_dir:
        raise ValueError("output_dir: required (where results.json and predictions/ go)")
    compare = comma_list(cfg.compare)
    for d in compare:   # fail before the long part
        if not (Path(d) / "results.json").is_file():
            raise FileNotFoundError(f"compare: {d}/results.json not found")
    mesh = make_mesh(dict(cfg.mesh))
    model_path = resolve_eval_model(cfg.model)
    model, tok = load_pretrained(model_path, dtype=cfg.dtype, mesh=mesh, chat_format=cfg.chat_format)
    import jax
    # one process: resumable generation (several hosts would each need the same file)
    resume = cfg.output_dir if jax.process_count() == 1 else None
    fingerprint = model_fingerprint(model_path, cfg.dtype)
    results, predictions = evaluate_model(model, tok, cfg, mesh=mesh, log=log, progress_dir=resume,
                                          fingerprint=fingerprint)
    if jax.process_index() == 0:
        write_outputs(cfg.output_dir, results, predictions, model=fingerprint, log=log)
        if compare:
            png = compare_chart([cfg.output_dir] + compare, Path(cfg.output_dir) / "compare.png")
            log(f"chart: {png}")
        log(f"wrote {cfg.output_dir}/results.json, report.md, predictions/")
    return results
