"""Metrics over per-example predictions. Classification metrics come from scikit-learn and
ROUGE from rouge-score; a missing prediction (None: nothing extracted) is always wrong."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _labels(preds: Sequence[int | None]) -> np.ndarray:
    return np.asarray([-1 if p is None else int(p) for p in preds])


def accuracy(preds: Sequence[int | None], golds: Sequence[int]) -> float:
    if not golds:
        return float("nan")
    return float(np.mean(_labels(preds) == np.asarray(golds)))


def macro_f1(preds: Sequence[int | None], golds: Sequence[int], n_classes: int) -> float:
    """Macro-F1 over the classes of 0..n-1 that the golds or predictions hold (as sklearn's
    default, so a `--limit` subset without some class is not charged a zero for it); 'no
    answer' predictions count against recall and are no class of their own."""
    from sklearn.metrics import f1_score
    present = sorted(({int(g) for g in golds} | {int(p) for p in preds if p is not None}) & set(range(n_classes)))
    if not present:
        return float("nan")
    return float(f1_score(np.asarray(golds), _labels(preds), labels=present, average="macro", zero_division=0))


def mcc(preds: Sequence[int | None], golds: Sequence[int]) -> float:
    """Matthews correlation; 'no answer' is its own (always wrong) class."""
    from sklearn.metrics import matthews_corrcoef
    return float(matthews_corrcoef(np.asarray(golds), _labels(preds)))


def entity_f1(pred_sets: Sequence[set], gold_sets: Sequence[set]) -> dict:
    """Micro precision/recall/F1 over exact (entity text, type) pairs pooled over examples;
    a partial span or a wrong type is both a false positive and a false negative."""
    tp = sum(len(p & g) for p, g in zip(pred_sets, gold_sets))
    n_pred = sum(len(p) for p in pred_sets)
    n_gold = sum(len(g) for g in gold_sets)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"entity_precision": prec, "entity_recall": rec, "entity_f1": f1}


def rouge(preds: Sequence[str], refs: Sequence[str]) -> dict:
    """Mean ROUGE-1/2/L F-measure (rouge-score, Porter stemming)."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(preds, refs):
        s = scorer.score(r, p or "")
        for k in totals:
            totals[k] += s[k].fmeasure
    n = max(len(preds), 1)
    return {k: v / n for k, v in totals.items()}


def numbers_match(pred: float | None, gold: float | str, rel_tol: float = 1e-3) -> bool:
    """Equal within a relative tolerance (golds are rounded, so exact equality is too strict:
    4.1667 matches a gold of 4.17 at the default 1e-3)."""
    if pred is None or not math.isfinite(pred):
        return False
    g = float(str(gold).replace(",", "").rstrip("%"))
    return math.isclose(pred, g, rel_tol=rel_tol, abs_tol=1e-9)


def numeric_match(preds: Sequence[float | None], golds: Sequence[float | str], rel_tol: float = 1e-3) -> float:
    if not golds:
        return float("nan")
    return float(np.mean([numbers_match(p, g, rel_tol) for p, g in zip(preds, golds)]))
