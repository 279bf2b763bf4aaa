"""Evaluation tasks: FLARE rows (the schema of Salesforce/FinEval) and the task registry.

A FLARE row is {"id", "query", "answer", "text", "choices", "gold"}: `query` is the
instruction plus context, `choices` the label words or option letters, `gold` the index
of the right one. Tasks without choices (numeric or open QA) score `answer` instead.
A task says how to prompt (a template over the row's fields), how to score (log-likelihood
over choices, generation + answer extraction, or for `judge` mode generation graded by an LLM
judge) and which FinEval capability it measures.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from findap_jax.data.records import RecordError, expand, read_raw, str_field

PACKAGE = Path(__file__).parents[1]
BUNDLED = PACKAGE / "eval" / "bundled"

MODES = ("loglik", "generate", "judge")   # judge: generate, then an LLM judges the answer
ANSWER_TYPES = ("choice", "label", "number", "text", "entities", "tatqa", "finqa", "open_qa")
SPLITS = ("similar", "novel")
CAPABILITIES = ("concepts", "tasks", "reasoning", "instruction_following")

CHOICE_COT = ("{query}\n\nThink step by step, then give your final answer on the last line in the "
              "form \"Selection: [[X]]\" where X is the letter of the correct option.")
CHOICE_DIRECT = "{query}\nAnswer with the letter of the correct option.\nAnswer:"
NUMBER_COT = ("{query}\n\nWork it out step by step, then give the final number on the last line "
              "as \"Answer: <number>\".")
OPEN_QA = ("{query}\n\nAnswer in one or two sentences, with units for numbers, on the last line as "
           "\"Answer: <answer>\".")


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """How one benchmark is prompted, scored and reported."""
    name: str
    files: tuple[str, ...]            # globs; relative ones resolve against data_dir
    answer_type: str                  # choice (letters), label (words), number, text, ... (ANSWER_TYPES)
    split: str                        # FinEval axis: similar | novel
    capability: str                   # concepts | tasks | reasoning | instruction_following
    domain: str = "finance"
    mode: str = "loglik"              # default scoring mode
    prompts: tuple[tuple[str, str], ...] = (("loglik", "{query}"), ("generate", "{query}"))
    metrics: tuple[str, ...] = ("accuracy",)
    system: str | None = None
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    rel_tol: float = 1e-3            # numeric answers
    source: str = ""                  # where the rows come from (shown in reports)
    reader: str = "flare"             # file format: flare rows, or a converter in benchmarks.READERS

    def __post_init__(self):
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"task {self.name}: answer_type must be one of {ANSWER_TYPES}")
        if self.split not in SPLITS or self.capability not in CAPABILITIES:
            raise ValueError(f"task {self.name}: split must be in {SPLITS}, capability in {CAPABILITIES}")
        if self.mode not in self.modes:
            raise ValueError(f"task {self.name}: default mode {self.mode!r} has no prompt")
        if not set(self.modes) <= set(MODES):
            raise ValueError(f"task {self.name}: modes must be in {MODES}")
        if "judge" in self.modes and self.needs_choices:
            raise ValueError(f"task {self.name}: judge mode is for free-form answers, not choices")

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.prompts)

    @property
    def needs_choices(self) -> bool:
        return self.answer_type in ("choice", "label")

    def prompt(self, mode: str, row: dict) -> str:
        template = dict(self.prompts).get(mode)
        if template is None:
            raise ValueError(f"task {self.name} has no {mode!r} mode (modes: {', '.join(self.modes)})")
        try:
            return template.format(**row)
        except KeyError as e:
            raise RecordError(f"{row.get('_where', self.name)}: field {e}: missing (the "
                              f"{mode} prompt of task {self.name} uses it)") from None


def validate_row(rec, needs_choices: bool, numeric: bool = False) -> dict:
    """Normalise one FLARE row; raises RecordError('field ...') for what a scorer would trip on."""
    if not isinstance(rec, dict):
        raise RecordError(f"expected a JSON object, got {type(rec).__name__}")
    out = dict(rec)
    out["query"] = str_field(rec, "query")
    if rec.get("id") is None:
        raise RecordError("field 'id': missing")
    out["id"] = str(rec["id"])
    if needs_choices:
        choices = rec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise RecordError("field 'choices': expected a non-empty list of strings")
        if not all(isinstance(c, str) and c.strip() for c in choices):
            raise RecordError("field 'choices': every choice must be a non-empty string")
        if len(set(choices)) != len(choices):
            raise RecordError("field 'choices': duplicate choices")
        gold = rec.get("gold")
        if gold is None:
            raise RecordError("field 'gold': missing")
        if isinstance(gold, bool) or not isinstance(gold, int):
            raise RecordError(f"field 'gold': expected an integer index, got {gold!r}")
        if not 0 <= gold < len(choices):
            raise RecordError(f"field 'gold': {gold} is out of range for {len(choices)} choices")
        out["choices"], out["gold"] = list(choices), gold
        out["answer"] = choices[gold]
    else:
        if rec.get("answer") is None or not str(rec["answer"]).strip():
            raise RecordError("field 'answer': missing or empty")
        out["answer"] = str(rec["answer"])
        if numeric:   # float() alone would take "nan", "inf" and "1_000"
            text = out["answer"].replace(",", "").rstrip("%").strip()
            try:
                ok = "_" not in text and math.isfinite(float(text))
            except ValueError:
                ok = False
            if not ok:
                raise RecordError(f"field 'answer': {out['answer']!r} is not a finite number")
    out.setdefault("text", "")
    return out


def resolve_files(task: EvalTask, data_dir: str = "", files: str | list | None = None) -> list[str]:
    """Files of a task: `files` (config override) or the task's own. Relative paths resolve
    against data_dir (default: the copies bundled in findap_jax/eval/bundled/, laid out like
    ../shared/data); `pkg:` paths are inside the package whatever the data dir."""
    pats = [files] if isinstance(files, str) else list(files or task.files)
    out = []
    for p in pats:
        if p.startswith("pkg:"):
            p = str(PACKAGE / p[4:])
        elif not os.path.isabs(p):
            p = os.path.join(data_dir or BUNDLED, p)
        out.append(p)
    return expand(out)


def load_rows(task: EvalTask, data_dir: str = "", files=None, limit: int = 0,
              sample_seed: int = -1) -> list[dict]:
    """All rows of a task in file order; with `limit` > 0 the first `limit` rows, or with
    sample_seed >= 0 a seeded random sample of `limit` rows (kept in file order: files
    sorted by label or source make the first rows unrepresentative). The first bad row
    raises RecordError naming file, line and field. Row ids must be unique."""
    if limit < 0:
        raise ValueError(f"limit={limit}: must be >= 0 (0 = every row)")
    if limit and sample_seed >= 0:
        import random
        rows = load_rows(task, data_dir, files)
        keep = sorted(random.Random(sample_seed).sample(range(len(rows)), min(limit, len(rows))))
        return [rows[i] for i in keep]
    rows, seen = [], {}
    for path in resolve_files(task, data_dir, files):
        for where, rec in _read(task.reader, path):
            try:
                row = validate_row(rec, task.needs_choices, task.answer_type == "number")
            except RecordError as e:
                raise RecordError(f"{where}: {e}") from None
            if row["id"] in seen:
                raise RecordError(f"{where}: field 'id': {row['id']!r} repeats {seen[row['id']]}")
            seen[row["id"]] = where
            row["_where"] = where
            rows.append(row)
            if limit and len(rows) >= limit:
                return rows
    if not rows:
        raise RecordError(f"task {task.name}: no rows in {', '.join(resolve_files(task, data_dir, files))}")
    return rows


def _read(reader: str, path: str):
    if reader == "flare":
        for where, rec, err in read_raw(path, split="test"):
            if err is not None:
                raise RecordError(f"{where}: {err}")
            yield where, rec
        return
    from findap_jax.eval.benchmarks import READERS
    if reader not in READERS:
        raise ValueError(f"unknown task reader {reader!r} (flare, {', '.join(READERS)})")
    yield from READERS[reader](path)


TASKS: dict[str, EvalTask] = {}


def register(task: EvalTask) -> EvalTask:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> EvalTask:
    if name not in TASKS:
        raise KeyError(f"unknown eval task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


register(EvalTask(
    name="fpb", files=("pkg:data/bundled/fpb/test.jsonl",), answer_type="label", split="similar",
    capability="tasks", mode="loglik", metrics=("accuracy", "macro_f1", "mcc"),
    prompts=(("loglik", "{query}"), ("generate", "{query}")), max_new_tokens=8,
    source="Financial PhraseBank test split (FLARE prompt), 996 sentences"))
register(EvalTask(
    name="cfa_mini", files=("pkg:eval/bundled/cfa_mini.jsonl",), answer_type="choice", split="novel",
    capability="reasoning", mode="generate", metrics=("accuracy",),
    prompts=(("loglik", CHOICE_DIRECT), ("generate", CHOICE_COT)), max_new_tokens=384,
    source="30 CFA Level I-style questions written for this project"))
register(EvalTask(
    name="finqa_mini", files=("pkg:eval/bundled/finqa_mini.jsonl",), answer_type="number", split="novel",
    capability="reasoning", mode="generate", metrics=("numeric_match",),
    prompts=(("generate", NUMBER_COT),), max_new_tokens=256, rel_tol=1e-3,
    source="25 FinQA-style table arithmetic questions written for this project"))

# Public benchmarks, read in their own formats from a data dir laid out like ../shared/data
# (see findap_jax/eval/benchmarks.py for the converters and prompts).
register(EvalTask(
    name="tweets_sentiment", files=("twitter_fin_sentiment/sent_valid.csv",), reader="tweets",
    answer_type="label", split="similar", capability="tasks", mode="loglik",
    metrics=("accuracy", "macro_f1"), max_new_tokens=8,
    source="zeroshot/twitter-financial-news-sentiment validation sample (MIT)"))
register(EvalTask(
    name="finner", files=("finner_sec/train_FIN5.txt",), reader="finner", answer_type="entities",
    split="similar", capability="tasks", mode="generate", prompts=(("generate", "{query}"),),
    metrics=("entity_f1",), max_new_tokens=128,
    source="FIN5 CoNLL sentences from SEC credit agreements, the 30% hash-held-out test part "
           "(Salinas Alvarado et al. 2015, CC BY 3.0)"))
register(EvalTask(
    name="mmlu_finance", files=("mmlu_finance/*_test.csv",), reader="mmlu", answer_type="choice",
    split="novel", capability="concepts", mode="loglik",
    prompts=(("loglik", CHOICE_DIRECT), ("generate", CHOICE_COT)), max_new_tokens=384,
    source="MMLU econometrics, macro/microeconomics, professional accounting (MIT)"))
register(EvalTask(
    name="tatqa", files=("tatqa/dev.json",), reader="tatqa", answer_type="tatqa", split="novel",
    capability="tasks", mode="generate", metrics=("tatqa_em", "tatqa_f1"), max_new_tokens=128,
    prompts=(("generate", "{query}\n\nGive the answer on the last line as \"Answer: <answer>\"; "
                          "separate several answers with \" | \" and name the scale (thousand, "
                          "million, billion or percent) when the answer has one."),),
    source="TAT-QA dev (CC BY 4.0)"))
register(EvalTask(
    name="finqa", files=("finqa/dev.json",), reader="finqa", answer_type="finqa", split="novel",
    capability="reasoning", mode="generate", metrics=("execution_accuracy",), max_new_tokens=384,
    prompts=(("generate", NUMBER_COT),), source="FinQA dev sample (MIT)"))
register(EvalTask(
    name="convfinqa", files=("convfinqa_pot/convfinqa_dev.json",), reader="convfinqa",
    answer_type="finqa", split="novel", capability="reasoning", mode="generate",
    metrics=("execution_accuracy",), max_new_tokens=384, prompts=(("generate", NUMBER_COT),),
    source="ConvFinQA dev sample, one row per turn with the gold history (Program-of-Thoughts "
           "packaging, MIT)"))
register(EvalTask(
    name="financebench", files=("financebench/financebench_open_source.jsonl",), reader="financebench",
    answer_type="open_qa", split="novel", capability="tasks", mode="generate",
    metrics=("rougeL", "numeric_match"), max_new_tokens=256,
    prompts=(("generate", OPEN_QA), ("judge", OPEN_QA)),
    source="FinanceBench open-source sample with evidence passages (CC BY-NC 4.0, non-commercial)"))
