"""Metrics on hand-checked cases."""
import pytest

from findap_jax.eval import metrics as M


def test_accuracy_f1_mcc_count_missing_as_wrong():
    golds = [0, 1, 2, 2]
    preds = [0, 1, None, 2]
    assert M.accuracy(preds, golds) == 0.75
    # class 2: P=1, R=0.5 -> F1 2/3; classes 0, 1 perfect -> macro (1 + 1 + 2/3) / 3
    assert M.macro_f1(preds, golds, 3) == pytest.approx((2 + 2 / 3) / 3)
    assert M.mcc([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert M.mcc([0, 0, 0], [0, 1, 2]) == 0.0


def test_macro_f1_averages_over_the_classes_present():
    """A `--limit` subset holding one class: a perfect model scores 1, not 1/3."""
    assert M.macro_f1([2] * 12, [2] * 12, 3) == 1.0
    # class 0: P 1, R 1/3 -> F1 1/2; class 1, predicted without gold rows: F1 0; the
    # no-answer counts against class 0's recall and is no class of its own -> (1/2 + 0) / 2
    assert M.macro_f1([0, 1, None], [0, 0, 0], 3) == pytest.approx(0.25)


def test_entity_f1_partial_span_and_wrong_type_do_not_match():
    gold = [{("Bank of America", "ORG"), ("John Smith", "PER")}]
    pred = [{("Bank of America", "ORG"), ("Smith", "PER"), ("Boston", "LOC")}]
    r = M.entity_f1(pred, gold)
    assert r["entity_precision"] == pytest.approx(1 / 3) and r["entity_recall"] == 0.5
    assert r["entity_f1"] == pytest.approx(0.4)
    assert M.entity_f1([{("Bank of America", "LOC")}], [{("Bank of America", "ORG")}])["entity_f1"] == 0.0


def test_numeric_match_relative_tolerance():
    assert M.numbers_match(4.1667, "4.17")             # rounded gold
    assert not M.numbers_match(4.1, "4.17")
    assert not M.numbers_match(None, "3")
    assert not M.numbers_match(float("nan"), "3")
    assert M.numbers_match(12.5, "12.5%")
    assert M.numeric_match([12.5, 40.0, None], ["12.5", "40", "1"]) == pytest.approx(2 / 3)


def test_rouge_identical_and_disjoint():
    r = M.rouge(["net income rose", "apples"], ["net income rose", "bond yields fell"])
    assert r["rouge1"] == pytest.approx(0.5) and r["rougeL"] == pytest.approx(0.5)
