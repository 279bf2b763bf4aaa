"""Training records from the train splits of public benchmarks and from HH-RLHF, for
`findap_jax.data.bundle`: tweets train -> sentiment chats, the FIN5 training part -> NER
chats (the answer format `finner` scores), FinQA train -> table QA chats whose reasoning
is the gold program executed step by step, HH-RLHF harmless-base -> general preference
pairs. Each converter returns (records, {reason: count} of what it left out).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re

from findap_jax.eval.benchmarks import (TWEET_LABELS, fin5_split, format_gold, read_conll_ner,
                                        table_text)

TWEET_INSTRUCTIONS = (
    "Is this finance tweet bearish, bullish or neutral about the stock or market it mentions?\n\n{t}",
    "Tweet: {t}\nWhat market sentiment does the tweet above express? Reply with bearish, bullish or neutral.",
    "Label the tweet below by its sentiment for investors (bearish, bullish or neutral).\n{t}",
)
NER_INSTRUCTIONS = (
    "Find the named entities in this sentence from a loan agreement. Give each on its own line as "
    "\"entity, TYPE\", where TYPE is PER (person), ORG (organization), LOC (location) or MISC (any "
    "other name); answer \"None\" if the sentence has none.\n\nSentence: {s}",
    "Sentence from a credit agreement filed with the SEC: {s}\n\nExtract every person (PER), "
    "organization (ORG), location (LOC) and other name (MISC), one per line in the form "
    "\"entity, TYPE\", copying the words exactly. Write \"None\" when there is no entity.",
    "Named entity recognition with the types PER, ORG, LOC and MISC. Output one \"entity, TYPE\" "
    "line per entity, in the order they appear, or \"None\".\nText: {s}",
)
FINQA_INSTRUCTIONS = (
    "Below is part of a company's annual report: text and a table.\n\n{c}\n\nUsing the figures "
    "above, answer the question: {q}\nShow each calculation, then finish with \"Answer: <number>\".",
    "Question: {q}\n\nReport excerpt:\n{c}\n\nCompute the answer from the report. List the steps "
    "and give the result on the last line as \"Answer: <number>\".",
    "{c}\n\nQuestion about the report above: {q}\nExplain the arithmetic briefly and end with "
    "the line \"Answer: <number>\".",
)


def tweets_train(path: str) -> tuple[list[dict], dict]:
    """zeroshot tweets `sent_train.csv` (text,label 0/1/2) -> bearish/bullish/neutral chats."""
    rows = list(csv.reader(io.StringIO(open(path, encoding="utf-8").read(), newline="")))
    if rows[0] != ["text", "label"]:
        raise ValueError(f"{path}: expected the header text,label")
    out, left = [], {}
    for i, rec in enumerate(rows[1:]):
        if len(rec) != 2 or rec[1].strip() not in ("0", "1", "2") or not rec[0].strip():
            left["malformed row"] = left.get("malformed row", 0) + 1
            continue
        text = rec[0].strip()
        out.append({"messages": [{"role": "user", "content": TWEET_INSTRUCTIONS[i % 3].format(t=text)},
                                 {"role": "assistant", "content": TWEET_LABELS[int(rec[1])]}]})
    return out, left


def fin5_train(path: str) -> tuple[list[dict], dict]:
    """The training side of the FIN5 hash split -> NER chats answered as `finner` expects."""
    out, n_test = [], 0
    for i, (_, row) in enumerate(read_conll_ner(path)):
        if fin5_split(row["text"]) == "test":
            n_test += 1
            continue
        out.append({"messages": [{"role": "user", "content": NER_INSTRUCTIONS[i % 3].format(s=row["text"])},
                                 {"role": "assistant", "content": row["answer"]}]})
    return out, {"held out for the finner eval task (test side of the split)": n_test}


# -- FinQA programs, executed so that the reasoning shows the gold computation -----------

_STEP = re.compile(r"\s*(\w+)\((.*?)\)\s*(?:,|$)")
_BINARY = {"add": ("+", lambda a, b: a + b), "subtract": ("-", lambda a, b: a - b),
           "multiply": ("*", lambda a, b: a * b), "divide": ("/", lambda a, b: a / b),
           "exp": ("^", lambda a, b: a ** b)}
_TABLE = {"table_sum": ("sum", sum), "table_average": ("average", lambda v: sum(v) / len(v)),
          "table_max": ("maximum", max), "table_min": ("minimum", min)}


def _number(arg: str, results: list) -> float:
    arg = arg.strip()
    if arg.startswith("#"):
        return results[int(arg[1:])]
    if arg.startswith("const_"):
        return -1.0 if arg == "const_m1" else float(arg[6:])
    pct = arg.endswith("%")
    v = float(arg.rstrip("%").replace(",", ""))
    return v / 100 if pct else v


def _cell(cell: str) -> float:
    c = cell.replace("$", "").replace(",", "").split("(")[0].strip()
    pct = c.endswith("%")
    v = float(c.rstrip("%").strip())
    return v / 100 if pct else v


def _fmt(v: float) -> str:
    return format_gold(round(v, 5))


def run_finqa_program(program: str, table: list[list]) -> tuple[list[str], object]:
    """(one line per step, result) of a FinQA program (`add(500, 350), divide(#0, 2248)`),
    each step's value rounded to 5 decimals; ValueError for anything it cannot execute."""
    steps = list(_STEP.finditer(program))
    if not steps or "".join(m.group(0) for m in steps).strip() != program.strip():
        raise ValueError(f"cannot parse program {program!r}")
    lines, results = [], []
    for k, m in enumerate(steps, 1):
        op, args = m.group(1), m.group(2)
        if op in _TABLE:
            name = args.rsplit(",", 1)[0].strip()
            row = next((r for r in table if str(r[0]).strip().lower() == name.lower()), None)
            if row is None:
                raise ValueError(f"no table row {name!r}")
            vals = [_cell(str(c)) for c in row[1:]]
            word, fn = _TABLE[op]
            res = fn(vals)
            lines.append(f"Step {k}: the {word} of the \"{name}\" row "
                         f"({', '.join(_fmt(v) for v in vals)}) is {_fmt(res)}")
        else:
            a, b = (x.strip() for x in args.split(",", 1))
            x, y = _number(a, results), _number(b, results)
            if op == "greater":
                res = x > y
                lines.append(f"Step {k}: is {_fmt(x)} greater than {_fmt(y)}? {'yes' if res else 'no'}")
            elif op in _BINARY:
                sym, fn = _BINARY[op]
                res = fn(x, y)
                lines.append(f"Step {k}: {_fmt(x)} {sym} {_fmt(y)} = {_fmt(res)}")
            else:
                raise ValueError(f"unknown operation {op!r}")
        # later steps use the value as shown, so every line's arithmetic checks out
        results.append(res if isinstance(res, bool) else round(res, 5))
    return lines, results[-1]


def _count(left: dict, reason: str, k: int = 1) -> None:
    left[reason] = left.get(reason, 0) + k


def _percent_line(answer: str, res: float) -> list[str]:
    """[`In percent: ...`] when the annotated answer is the result in percent (34.7% for
    0.34719), else []."""
    try:
        v = float(answer.removesuffix("%").replace(",", "")) if answer.endswith("%") else None
    except ValueError:
        return []
    return [f"In percent: {_fmt(res * 100)}%"] if v is not None and abs(v - res * 100) < abs(v - res) else []


def finqa_train(path: str, drop_sentence=None) -> tuple[list[dict], dict]:
    """FinQA train records -> chats: report text + table and the question; the reply runs the
    gold program step by step and ends with "Answer: " and the annotated answer (the executed
    value when the annotation does not match it). Records whose program does not reproduce
    the gold `exe_ans` are left out. Report sentences for which `drop_sentence` is true are
    cut from the context unless they are the question's gold evidence (`qa.gold_inds`)."""
    from findap_jax.eval.official import finqa_match
    data = json.load(open(path, encoding="utf-8"))
    out, left = [], {}
    for i, rec in enumerate(data):
        qa, gold = rec["qa"], rec["qa"]["exe_ans"]
        try:
            lines, res = run_finqa_program(qa["program"], rec["table"])
        except (ValueError, ZeroDivisionError, IndexError, OverflowError):
            _count(left, "program not executable")
            continue
        if isinstance(res, bool):
            ok, answer = gold == ("yes" if res else "no"), gold
        else:
            ok = isinstance(gold, float) and math.isclose(res, gold, rel_tol=1e-4, abs_tol=1e-5)
            answer = qa["answer"].strip() if finqa_match(qa["answer"].strip(), gold) else _fmt(res)
            lines += _percent_line(answer, res)
        if not ok:
            _count(left, "program result differs from exe_ans")
            continue
        sents = list(rec["pre_text"]) + list(rec["post_text"])   # text_<k> indexes this list
        gold_inds = qa.get("gold_inds", {})
        cut = {k for k, t in enumerate(sents)
               if drop_sentence and f"text_{k}" not in gold_inds and drop_sentence(t)}
        if cut:
            _count(left, "context sentences cut (n-gram overlap with eval tasks)", len(cut))
        n_pre = len(rec["pre_text"])
        pre = [t for k, t in enumerate(sents[:n_pre]) if k not in cut]
        post = [t for k, t in enumerate(sents[n_pre:], n_pre) if k not in cut]
        context = "\n".join([" ".join(pre), table_text(rec["table"]), " ".join(post)])
        prompt = FINQA_INSTRUCTIONS[i % 3].format(c=context, q=qa["question"].strip())
        reply = "\n".join(lines) + f"\nAnswer: {answer}"
        out.append({"messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": reply}]})
    return out, left


# -- HH-RLHF ---------------------------------------------------------------------------

_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_turns(transcript: str) -> list[dict]:
    """Messages of a transcript "\\n\\nHuman: ...\\n\\nAssistant: ..." (consecutive turns of
    one speaker joined); ValueError when it does not start with a Human turn."""
    parts = _TURN.split(transcript)
    if parts[0].strip() or len(parts) < 3 or parts[1] != "Human":
        raise ValueError("does not start with \\n\\nHuman:")
    out: list[dict] = []
    for who, text in zip(parts[1::2], parts[2::2]):
        role, text = ("user" if who == "Human" else "assistant"), text.strip()
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})
    return out


def hh_pair(chosen: str, rejected: str) -> dict:
    """The shared dialogue as `messages` and the two differing last assistant turns;
    ValueError (the reason) when the two transcripts differ anywhere else."""
    c, r = hh_turns(chosen), hh_turns(rejected)
    k = 0
    while k < min(len(c), len(r)) and c[k] == r[k]:
        k += 1
    if len(c) != k + 1 or len(r) != k + 1 or c[k]["role"] != "assistant" or r[k]["role"] != "assistant":
        raise ValueError("the transcripts differ before their last assistant turn")
    if not c[k]["content"] or not r[k]["content"]:
        raise ValueError("an empty last assistant turn")
    if any(not m["content"] for m in c[:k]):
        raise ValueError("an empty turn in the shared dialogue")
    return {"messages": c[:k], "chosen": c[k]["content"], "rejected": r[k]["content"]}


def hh_rlhf(path: str) -> tuple[list[dict], dict]:
    """HH-RLHF jsonl.gz (`chosen`, `rejected` transcripts) -> preference records."""
    out, left = [], {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            try:
                out.append(hh_pair(rec["chosen"], rec["rejected"]))
            except ValueError as e:
                left[str(e)] = left.get(str(e), 0) + 1
    return out, left
