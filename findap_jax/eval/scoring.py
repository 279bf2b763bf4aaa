"""Per answer type: what is extracted from a generation, when one example is correct, and
the task-level metrics. Extraction never raises; a failed extraction is wrong."""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from findap_jax.eval import metrics as M
from findap_jax.eval.extract import extract_choice, extract_label, extract_number, extract_number_text

# answer type -> primary metric (the one reports and charts show)
PRIMARY = {"choice": "accuracy", "label": "accuracy", "number": "numeric_match", "text": "rougeL",
           "entities": "entity_f1", "tatqa": "tatqa_f1", "finqa": "execution_accuracy", "open_qa": "rougeL"}
JUDGE_PRIMARY = "judge_accuracy"   # any task scored in judge mode


def parse_entities(text: str, types: Sequence[str] = ("PER", "ORG", "LOC", "MISC")) -> set:
    """{(entity, TYPE)} from "entity, TYPE" lines; lines that do not end in a known type are
    ignored (so prose around the list costs precision only through what it claims)."""
    out = set()
    if not isinstance(text, str):
        return out
    for line in text.splitlines():
        m = re.match(r"\s*(?:[-*•]\s*|\d+[.)]\s*)?(.+?)\s*[,:(–-]\s*\(?([A-Za-z]+)\)?\s*\.?$", line)
        if m and m.group(2).upper() in types:
            out.add((" ".join(m.group(1).strip().strip('"').split()), m.group(2).upper()))
    return out


def extract(task, row: dict, text: str):
    """The prediction a generation gives for one row (None when nothing usable)."""
    kind = task.answer_type
    if kind == "choice":
        return extract_choice(text, len(row["choices"]))
    if kind == "label":
        return extract_label(text, row["choices"])
    if kind == "number":
        return extract_number(text)
    if kind == "entities":
        return sorted(parse_entities(text))
    if kind == "tatqa":
        from findap_jax.eval.official import parse_tatqa_prediction
        ans, scale = parse_tatqa_prediction(text)
        if row.get("answer_type") == "arithmetic" and isinstance(ans, str):
            # accounting negative with thousands commas, "(1,496.5)": the official number
            # reader takes only comma-free brackets as negative; an arithmetic gold is a number
            m = re.fullmatch(r"\(\s*(\d{1,3}(?:,\d{3})+(?:\.\d+)?)\s*\)", ans)
            ans = "-" + m.group(1).replace(",", "") if m else ans
        return [ans, scale]
    if kind == "finqa":
        # after the last "Answer:" a yes/no that opens it, or comes without digits, is the
        # answer ("Answer: No, 2019 revenue (5.2) was lower"); else the number
        parts = re.split(r"answer\s*(?:is|:)", (text or "").lower() if isinstance(text, str) else "")
        opens = re.match(r"[\s*_\"'`]*(yes|no)\b", parts[-1]) if len(parts) > 1 else None
        if opens:
            return opens.group(1)
        yn = re.findall(r"\b(yes|no)\b", parts[-1])
        if yn and (len(parts) > 1 or extract_number(text) is None) and not re.search(r"\d", parts[-1]):
            return yn[-1]
        return extract_number_text(text)   # as written: the official rule rounds to its precision
    if kind == "open_qa":
        from findap_jax.eval.openqa import answer_span
        return answer_span(text)
    return (text or "").strip()


def example_score(task, row: dict, pred) -> float:
    """1.0/0.0 for right/wrong (F1 for span-style answers)."""
    kind = task.answer_type
    if kind in ("choice", "label"):
        return float(pred == row["gold"])
    if kind == "number":
        return float(M.numbers_match(pred, row["answer"], task.rel_tol))
    if kind == "entities":
        pred_set, gold_set = set(map(tuple, pred)), set(map(tuple, row["entities"]))
        if not pred_set and not gold_set:   # rightly none found (the pooled F1 is unaffected)
            return 1.0
        return M.entity_f1([pred_set], [gold_set])["entity_f1"]
    if kind == "tatqa":
        from findap_jax.eval.official import tatqa_score
        ans, scale = pred
        return tatqa_score(ans, scale, row["gold_answer"], row["scale"], row["answer_type"])[1]
    if kind == "finqa":
        from findap_jax.eval.official import finqa_match
        return float(finqa_match(pred, row["exe_ans"]))
    if kind == "open_qa":
        return M.rouge([pred or ""], [row["answer"]])["rougeL"]
    return 0.0


def task_metrics(task, rows: Sequence[dict], preds: Sequence[dict], mode: str) -> dict:
    p = [x["pred"] for x in preds]
    kind, out = task.answer_type, {}
    if kind in ("choice", "label"):
        golds = [r["gold"] for r in rows]
        out["accuracy"] = M.accuracy(p, golds)
        if mode == "loglik":
            out["accuracy_norm"] = M.accuracy([x["pred_norm"] for x in preds], golds)
        if "macro_f1" in task.metrics:
            out["macro_f1"] = M.macro_f1(p, golds, max(len(r["choices"]) for r in rows))
        if "mcc" in task.metrics:
            out["mcc"] = M.mcc(p, golds)
    elif kind == "number":
        out["numeric_match"] = M.numeric_match(p, [r["answer"] for r in rows], task.rel_tol)
    elif kind == "entities":
        out.update(M.entity_f1([set(map(tuple, x)) for x in p], [set(map(tuple, r["entities"])) for r in rows]))
    elif kind == "tatqa":
        from findap_jax.eval.official import tatqa_score
        s = [tatqa_score(a, sc, r["gold_answer"], r["scale"], r["answer_type"]) for (a, sc), r in zip(p, rows)]
        out["tatqa_em"], out["tatqa_f1"] = float(np.mean([x[0] for x in s])), float(np.mean([x[1] for x in s]))
    elif kind == "finqa":
        out["execution_accuracy"] = float(np.mean([example_score(task, r, x) for r, x in zip(rows, p)]))
    elif kind == "open_qa":
        from findap_jax.eval.openqa import gold_numbers_found
        out.update(M.rouge([x or "" for x in p], [r["answer"] for r in rows]))
        found = [gold_numbers_found(r["answer"], x) for r, x in zip(rows, p)]
        found = [f for f in found if f is not None]   # rows whose gold answer has a number
        out["n_numeric"] = len(found)
        if found:
            out["numeric_match"] = float(np.mean(found))
    else:
        out.update(M.rouge(p, [r["answer"] for r in rows]))
    if mode in ("generate", "judge") and kind not in ("text", "entities", "tatqa"):
        out["no_answer"] = float(np.mean([x is None for x in p]))
    if mode == "judge":
        verdicts = [x.get("judge") for x in preds]
        out[JUDGE_PRIMARY] = float(np.mean([v == "correct" for v in verdicts]))
        # unparseable replies score wrong and are counted (empty answers are not asked)
        out["judge_unparsed"] = sum(v is None for v in verdicts)
    return out
