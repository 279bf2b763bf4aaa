"""Contamination guard: word n-gram overlap between training tasks and evaluation tasks.

An evaluation row counts as contaminated by a training task when any n-gram (default 13
words, lowercased) of its content (`text` field: the sentence, question or report, not
the shared prompt template) occurs in the training task's records. Contents shorter than
n words (tweets) are compared as a whole, down to `min_words`; shorter ones are skipped.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from findap_jax.data.records import read_records
from findap_jax.data.tasks import TaskSpec

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def grams(ws: Sequence[str], n: int) -> set[int]:
    return {hash(tuple(ws[i:i + n])) for i in range(len(ws) - n + 1)}


def content_grams(content: str, n: int = 13, min_words: int = 6) -> tuple[int, set[int]] | None:
    """(gram length, hashes) of one evaluation content: n-grams, the whole content when it
    is shorter than n words, nothing (None) under min_words."""
    ws = words(content)
    if len(ws) < min_words:
        return None
    k = min(n, len(ws))
    return k, grams(ws, k)


def eval_gram_sets(contents: Iterable[str], n: int = 13, min_words: int = 6) -> dict[int, set[int]]:
    """{gram length: hashes} of evaluation contents."""
    out: dict[int, set[int]] = {}
    for c in contents:
        kg = content_grams(c, n, min_words)
        if kg is not None:
            out.setdefault(kg[0], set()).update(kg[1])
    return out


def shares_ngrams(text: str, eval_grams: Mapping[int, set[int]]) -> bool:
    """Whether a training text contains any evaluation n-gram (decontamination filter)."""
    ws = words(text)
    return any(grams(ws, k) & g for k, g in eval_grams.items())


def record_texts(kind: str, rec: Mapping) -> list[str]:
    """Every piece of text a training record shows the model."""
    if kind == "cpt":
        return [rec["text"]]
    texts = [m["content"] for m in rec["messages"]]
    return texts + [rec["chosen"], rec["rejected"]] if kind == "preference" else texts


def eval_contents(rows: Iterable[Mapping]) -> list[tuple[str, str]]:
    """(row id, content) for each evaluation row: `text`, else the query."""
    return [(r["id"], r.get("text") or r["query"]) for r in rows]


def overlap(train: Mapping[str, TaskSpec], evals: Mapping[str, list[tuple[str, str]]], n: int = 13,
            min_words: int = 6, split: str = "train") -> dict[str, dict[str, dict]]:
    """{train task: {eval task: {"rows": contaminated rows, "of": rows checked, "ids": first ids}}}.
    Memory holds the evaluation side only; training records are streamed past it."""
    index: dict[int, dict[int, set]] = {}        # gram length -> gram -> {(eval task, row id)}
    checked: dict[str, int] = {}
    for ename, rows in evals.items():
        checked[ename] = 0
        for rid, content in rows:
            kg = content_grams(content, n, min_words)
            if kg is None:
                continue
            checked[ename] += 1
            for g in kg[1]:
                index.setdefault(kg[0], {}).setdefault(g, set()).add((ename, rid))
    report: dict[str, dict[str, dict]] = {}
    for tname, spec in train.items():
        if split not in spec.files:
            continue
        hits: dict[str, list] = {e: [] for e in evals}
        found: set = set()
        for _, rec in read_records(spec.files[split], spec.kind, on_error="skip", split=split):
            for text in record_texts(spec.kind, rec):
                ws = words(text)
                for k, table in index.items():
                    for g in grams(ws, k):
                        for key in table.get(g, ()):
                            if key not in found:
                                found.add(key)
                                hits[key[0]].append(key[1])
        report[tname] = {e: {"rows": len(hits[e]), "of": checked[e], "ids": hits[e][:5]} for e in evals}
    return report


def eval_rows_for(tasks: str | Sequence[str], data_dir: str = "") -> dict[str, list[tuple[str, str]]]:
    from findap_jax.eval.tasks import get_task, load_rows
    from findap_jax.config import comma_list
    names = comma_list(tasks)
    return {name: eval_contents(load_rows(get_task(name), data_dir)) for name in names}


def format_report(report: Mapping) -> str:
    lines = ["| training task | eval task | contaminated rows | of | share | example ids |",
             "|---|---|---|---|---|---|"]
    for tname, per in report.items():
        for ename, r in per.items():
            share = r["rows"] / r["of"] if r["of"] else 0.0
            lines.append(f"| {tname} | {ename} | {r['rows']} | {r['of']} | {share:.2%} | "
                         f"{', '.join(map(str, r['ids']))} |")
    return "\n".join(lines)


def check(report: Mapping, max_share: float) -> None:
    """Raise when any (training, eval) pair overlaps on more than `max_share` of the eval rows."""
    bad = [(t, e, r) for t, per in report.items() for e, r in per.items()
           if r["of"] and r["rows"] / r["of"] > max_share]
    if bad:
        t, e, r = bad[0]
        raise ValueError(f"contamination: training task {t} shares {r['rows']} of {r['of']} rows of eval task "
                         f"{e} ({n_gram_note(r)}); above data.contamination.max_share={max_share}. "
                         f"Remove those records or raise the threshold deliberately.")


def n_gram_note(r: Mapping) -> str:
    return "e.g. ids " + ", ".join(map(str, r["ids"])) if r["ids"] else "no ids"


def mixture_report(data_cfg, all_tasks: bool = False) -> dict | None:
    """Overlap of the configured mixture's training tasks (every task with `all_tasks`) with
    data.contamination.eval_tasks; None when no eval tasks are configured."""
    import seqio

    from findap_jax.data.pipeline import resolve_name, task_specs
    from findap_jax.data.registry import COMPOSITE_TASKS, PREFIX
    c = data_cfg.contamination
    if not c.eval_tasks:
        return None
    specs = task_specs(data_cfg)
    if not all_tasks:
        mix = seqio.get_mixture_or_task(resolve_name(data_cfg.mixture))
        used = set()
        for t in getattr(mix, "tasks", [mix]):
            name = t.name.removeprefix(PREFIX)
            used.update(COMPOSITE_TASKS.get(name, (name,)))
        unread = sorted(used - set(specs))
        if unread:   # a task whose files the check cannot see would pass it unread
            raise ValueError(f"data.contamination: mixture {data_cfg.mixture!r} uses task(s) {unread} "
                             "with no file spec to check")
        specs = {k: v for k, v in specs.items() if k in used}
    return overlap(specs, eval_rows_for(c.eval_tasks), n=c.n)
