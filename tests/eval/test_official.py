"""Official TAT-QA / FinQA scoring semantics (findap_jax.eval.official).

Golds below are copied from the real dev files (/work/shared/data/tatqa/dev.json, TAT-QA
official dev split; /work/shared/data/finqa/dev.json, FinQA dev records) and hard-coded,
since CI has no /work/shared. The expected TAT-QA (em, f1) were produced by running the
OFFICIAL scorer (NExTplusplus/TAT-QA tatqa_metric.TaTQAEmAndF1) on each case. For FinQA the
column `official` is the verdict of czyssrs/FinQA code/evaluate/evaluate.py
(eval_program + evaluate_result's `exe_res == gold_res`) on the number executed as a
program (add(x, const_0), or divide(x, const_100) for the percent reading); rows where
`ours` is True but `official` is False are our documented widening for free-text
numbers (stated-precision rounding), never the other way round.
"""
import math

import numpy as np
import pytest

from findap_jax.eval.official import (
    finqa_match,
    parse_tatqa_prediction,
    tatqa_normalize,
    tatqa_score,
)

# ---------------------------------------------------------------------------------------
# TAT-QA: real dev questions. (uid prefix, answer_type, gold answer, gold scale)
# ---------------------------------------------------------------------------------------
SALES = ("4960801d", "span", ["$1,496.5"], "million")                 # total sales in 2019
TYPES = ("593c4388", "multi-span", ["fixed-price type", "cost-plus type", "time-and-material type"], "")
CARRY = ("c3993366", "multi-span", ["73,260", "57,768"], "thousand")   # loss carryforward 2019/2018
PCT = ("05b670d3", "arithmetic", -22.22, "percent")                   # % change in Other
CHG = ("eb787966", "arithmetic", -12.6, "million")                    # change in Other
COUNT = ("8f61e8be", "count", "4", "")                                 # how many assumptions
COST = ("23801627", "span", [("our allowable incurred costs plus a profit which can be fixed or "
                              "variable depending on the contract\u2019s fee arrangement up to "
                              "predetermined funding levels determined by the customer")], "")

# (question, prediction, prediction scale, (em, f1) from the official scorer)
TATQA_DEV_CASES = [
    (SALES, "$1,496.5", "million", (1.0, 1.0)),
    (SALES, "1,496.5", "million", (1.0, 1.0)),          # "$" / "," normalised away
    (SALES, "1496.5", "", (0.0, 0.0)),                  # scale dropped -> 1496.5 != 1.4965e9
    (SALES, "1,496.5", "thousand", (0.0, 0.0)),         # wrong scale
    (SALES, "1496500000", "", (1.0, 1.0)),              # scale folded into the number: same value
    (SALES, "1,496.5 million", "", (1.0, 1.0)),         # scale word inside the answer text
    (TYPES, ["cost-plus type", "fixed-price type", "time-and-material type"], "", (1.0, 1.0)),  # order-free
    (TYPES, ["fixed-price type", "cost-plus type"], "", (0.0, 0.86)),   # partial multi-span
    (TYPES, "fixed-price", "", (0.0, 0.4)),
    (CARRY, ["73,260", "57,768"], "thousand", (1.0, 1.0)),
    (CARRY, ["57,768", "73,260"], "thousand", (1.0, 1.0)),
    (CARRY, ["73,260", "57,768"], "", (0.0, 0.0)),      # numbers right, scale missing
    (CARRY, ["73,260"], "thousand", (0.0, 0.67)),       # one of two spans
    (PCT, "-22.22", "percent", (1.0, 1.0)),
    (PCT, "-22.22%", "", (1.0, 1.0)),                   # '%' in the text == percent scale
    (PCT, -0.2222, "", (1.0, 1.0)),                     # unscaled fraction: add_percent_pred rule
    (PCT, "-22.221", "percent", (1.0, 1.0)),            # numbers compared at round(x, 2)
    (PCT, "-22.2", "percent", (0.0, 0.0)),
    (PCT, "-22.22", "", (0.0, 0.0)),                    # no scale -> read as -22.22, not -0.2222
    (PCT, "-22.22", "million", (0.0, 0.0)),             # wrong scale
    (CHG, "-12.6", "million", (1.0, 1.0)),
    (CHG, "(12.6)", "million", (1.0, 1.0)),             # accounting negative
    (CHG, "12.6", "million", (0.0, 0.0)),               # arithmetic: f1 := em, no partial credit
    (CHG, "-12.6", "billion", (0.0, 0.0)),
    (COUNT, "4", "", (1.0, 1.0)),
    (COUNT, 4.0, "", (1.0, 1.0)),
    (COUNT, "3", "", (0.0, 0.0)),
    (COUNT, "four", "", (0.0, 0.0)),
    (COST, "our allowable incurred costs plus a profit", "", (0.0, 0.39)),   # span token F1
]


@pytest.mark.parametrize("q,pred,pred_scale,want", TATQA_DEV_CASES)
def test_tatqa_dev_cases_match_official(q, pred, pred_scale, want):
    _, answer_type, gold, gold_scale = q
    assert tatqa_score(pred, pred_scale, gold, gold_scale, answer_type) == want


# Rows of upstream's own unit-test table (TAT-QA tatqa_metric_test.py), also re-run through
# the official scorer: (answer_type, gold, gold scale, pred, pred scale, (em, f1)).
UPSTREAM_TABLE = [
    ("span", ["1234.1"], "million", "1234.1", "thousand", (0.0, 0.0)),
    ("multi-span", ["singapore", "china", "usa"], "", ["china", "singapore"], "", (0.0, 0.8)),
    ("arithmetic", 123.2, "million", 123200000, "", (1.0, 1.0)),
    ("arithmetic", 123.2, "million", 123.2, "", (0.0, 0.0)),
    ("arithmetic", 123.22, "", 123.2, "", (0.0, 0.0)),
    ("arithmetic", 22.12, "percent", 0.22121, "percent", (0.0, 0.0)),
    ("arithmetic", 22.12, "percent", 22.1231, "percent", (1.0, 1.0)),
    ("arithmetic", 22.12, "million", ["1", "2"], "", (0.0, 0.0)),
    ("arithmetic", ["34.12"], "percent", ["0.3412"], "", (1.0, 1.0)),   # list gold str()'d
    ("span", [22.12], "", "22.12%", "", (0.0, 0.0)),
    ("span", [22.12], "percent", "22.12%", "", (1.0, 1.0)),
    ("span", ["$1.0 million"], "", ["['$1.0 million']"], "", (1.0, 1.0)),
    ("multi-span", ["$23,234", "$234.12"], "", ["234.12", "23,234"], "", (1.0, 1.0)),
    ("count", 5, "", "abcd 5", "1", (0.0, 0.0)),
    ("span", [("wages and salaries, social security costs, pension and other costs and "
               "share-based payments, see note 10 of the Financial Statements")], "",
     ["wages and salaries, social security costs, pension and other costs and share - based payments,"],
     "", (0.0, 0.67)),
]


@pytest.mark.parametrize("answer_type,gold,gold_scale,pred,pred_scale,want", UPSTREAM_TABLE)
def test_tatqa_upstream_table(answer_type, gold, gold_scale, pred, pred_scale, want):
    assert tatqa_score(pred, pred_scale, gold, gold_scale, answer_type) == want


def test_tatqa_normalisation():
    # outputs identical to upstream tatqa_utils.normalize_answer on the same strings
    assert tatqa_normalize("1,234.0") == "1234.0"
    assert tatqa_normalize("1234") == "1234"        # ints stay ints here...
    assert tatqa_score("1234", "", ["1,234.0"], "", "span") == (1.0, 1.0)   # ...but answers agree
    assert tatqa_normalize("12%") == "0.12"
    assert tatqa_normalize("The Fixed-Price, type.") == "fixedprice type"
    assert tatqa_normalize("(134)") == "-134"


def test_tatqa_wrong_scale_is_never_exact():
    for scale in ("", "thousand", "billion", "percent"):
        em, f1 = tatqa_score("1,496.5", scale, ["$1,496.5"], "million", "span")
        assert em == 0.0 and f1 == 0.0


def test_tatqa_partial_multispan_between_0_and_1():
    em, f1 = tatqa_score(["fixed-price type"], "", TYPES[2], "", "multi-span")
    assert em == 0.0 and 0.0 < f1 < 1.0
    assert f1 == 0.67                                  # official scorer: (0.0, 0.67)


@pytest.mark.parametrize("pred", [None, "", "   ", [], [""], ["", " "], float("nan"), float("inf"), True])
def test_tatqa_extraction_failure_scores_zero(pred):
    assert tatqa_score(pred, "", ["$1,496.5"], "million", "span") == (0.0, 0.0)
    assert tatqa_score(pred, "percent", -22.22, "percent", "arithmetic") == (0.0, 0.0)


@pytest.mark.parametrize("args", [
    (None, None, None, None, None),
    ("1", "", None, "", "span"),
    ("1", None, "1", None, None),
    ({"a": 1}, "million", object(), 7, "count"),
    ("½,2([4million", "thousand", ["٣nan)1,234.0", "[million"], "", "span"),
    ("1", "", "4.0", "", "count"),        # upstream raises: int("4.0")
    (["x", 2.5, None], "", ["x"], "", "multi-span"),
])
def test_tatqa_never_raises(args):
    em, f1 = tatqa_score(*args)
    assert 0.0 <= em <= 1.0 and 0.0 <= f1 <= 1.0


def test_tatqa_numeric_zero_prediction_is_scored():
    # Deliberate deviation: upstream's `if not prediction` drops a float 0.0; we score it.
    assert tatqa_score(0.0, "", 0, "", "arithmetic") == (1.0, 1.0)
    assert tatqa_score("0", "", 0, "", "arithmetic") == (1.0, 1.0)   # string "0": upstream too


# ---------------------------------------------------------------------------------------
# TAT-QA: parsing free-form generations
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("Answer: $1,496.5 million", ("$1,496.5", "million")),
    ("Sales rose.\nAnswer: 1.0\nWait, recomputing.\nAnswer: -22.22%", ("-22.22", "percent")),
    ("Answer: 73,260 | 57,768 thousand", (["73,260", "57,768"], "thousand")),
    ("Answer: 2019; 2018", (["2019", "2018"], "")),
    ("Answer:\n- fixed-price type\n- cost-plus type\n- time-and-material type",
     (["fixed-price type", "cost-plus type", "time-and-material type"], "")),
    ("final answer: 4.", ("4", "")),
    ("Answer: 4. The company uses four assumptions", ("4. The company uses four assumptions", "")),
    ("Answer: **1.2 billion**", ("1.2", "billion")),
    ("Answer: 5.3 percent", ("5.3", "percent")),
    ("Answer: cost-plus type", ("cost-plus type", "")),
    ("Answer: millions of units", ("millions of units", "")),     # no digit: text kept whole
    ("Reasoning first.\nThe total is 42 percent", ("The total is 42", "percent")),   # no cue: last line
    ("", ("", "")),
    ("Answer:", ("", "")),
    ("Answer:   \n  ", ("", "")),
    (None, ("", "")),
    (12.5, ("", "")),
    ("The answer is 12.5%.", ("12.5", "percent")),                # no "Answer:": "answer is"
    ("Answer: 12.5% (calculated as 5 / 40)", ("12.5", "percent")),  # the bracketed aside dropped
    ("Answer: \u22121,496.5 million", ("-1,496.5", "million")),     # unicode minus
    ("Answer: (1,496.5) million", ("(1,496.5)", "million")),        # kept: span golds look so
    ("Answer: 1,234 (in thousands)", ("1,234", "thousand")),        # the scale from the aside
    ("The answer is based on the table below.\n1,000", ("1,000", "")),   # prose "answer is": last line
])
def test_parse_tatqa_prediction(text, want):
    assert parse_tatqa_prediction(text) == want


def test_parse_then_score_end_to_end():
    ans, scale = parse_tatqa_prediction("Total 2019 sales:\nAnswer: $1,496.5 million")
    assert tatqa_score(ans, scale, ["$1,496.5"], "million", "span") == (1.0, 1.0)
    ans, scale = parse_tatqa_prediction("Answer: -22.22%")
    assert tatqa_score(ans, scale, -22.22, "percent", "arithmetic") == (1.0, 1.0)
    ans, scale = parse_tatqa_prediction("Answer: 73,260 | 57,768")       # scale forgotten
    assert tatqa_score(ans, scale, ["73,260", "57,768"], "thousand", "multi-span") == (0.0, 0.0)


# ---------------------------------------------------------------------------------------
# FinQA: real dev golds (id, exe_ans, annotated answer string)
#   PKG/2009/page_65.pdf-4  0.56197  "56%"      divide(25048, 44572)
#   MMM/2005/page_95.pdf-1  18.57143 "18.6"     divide(130, 7)
#   INTC/2013/page_33.pdf-2 0.00455  "0.5%"     divide(240, 52708)
#   SNA/2012/page_33.pdf-3  1.72447  "1.72"     divide(187.26, 108.59)
#   STT/2011/page_83.pdf-1  114.0    "114"      subtract(303, 189)
#   L/2015/page_59.pdf-4    -0.1239  "-12.4%"   subtract(110.59, 126.23), divide(#0, 126.23)
#   VTR/2007/page_47.pdf-3  643822.41 "643822.41" multiply(14669, 43.89)
#   PPG/2013/page_40.pdf-2  "no"     "no"       greater(288, 468)
# ---------------------------------------------------------------------------------------
# (gold exe_ans, prediction, official verdict (plain or /100 reading), ours)
FINQA_CASES = [
    (0.56197, 0.56197, True, True),
    (0.56197, "0.56197", True, True),
    (0.56197, 56.197, True, True),          # official via divide(56.197, const_100)
    (0.56197, 56.2, False, True),           # the FinEval case: percent, stated to 1 decimal
    (0.56197, "56.2%", False, True),
    (0.56197, "56%", False, True),          # the annotated answer itself
    (0.56197, 0.562, False, True),
    (0.56197, 56.3, False, False),
    (0.56197, "0.57", False, False),
    (0.56197, 1, False, False),             # one significant digit is too coarse
    (0.56197, 0, False, False),
    (18.57143, 130 / 7, True, True),        # official: round(x, 5) == exe_ans
    (18.57143, 18.57143, True, True),
    (18.57143, 18.6, False, True),
    (18.57143, 18.571, False, True),
    (18.57143, 18.57144, False, False),     # 5 decimals given -> exactly the official test
    (18.57143, 18.5, False, False),         # truncated, not rounded
    (0.00455, 0.455, True, True),
    (0.00455, 0.46, False, True),
    (0.00455, "0.5%", False, False),
    (0.00455, 0.0045, False, False),
    (1.72447, 1.72, False, True),
    (1.72447, 172.45, False, True),         # ratio read as a percent
    (1.72447, 1.73, False, False),
    (114.0, 114, True, True),
    (114.0, "$114", True, True),
    (114.0, "114.0", True, True),
    (114.0, 113, False, False),
    (-0.1239, -12.39, True, True),
    (-0.1239, "-12.4%", False, True),
    (-0.1239, "(12.4)", False, True),       # accounting negative
    (-0.1239, 12.4, False, False),          # sign matters
    (643822.41, "643,822.41", True, True),
    (643822.41, 643822.4, False, True),
    (643822.41, 643823, False, False),
]


@pytest.mark.parametrize("gold,pred,official,ours", FINQA_CASES)
def test_finqa_dev_cases(gold, pred, official, ours):
    assert finqa_match(pred, gold) is ours
    if official:                     # whatever the official rule accepts, we accept
        assert ours


def test_finqa_stricter_precision_option():
    assert finqa_match("56%", 0.56197)
    assert not finqa_match("56%", 0.56197, min_sig_digits=3)
    assert finqa_match("56.2%", 0.56197, min_sig_digits=3)


@pytest.mark.parametrize("pred,want", [
    ("no", True), ("No.", True), (" NO ", True), ("**no**", True),
    ("yes", False), ("no way", False), (0, False), (0.0, False), (None, False),
])
def test_finqa_yes_no(pred, want):
    assert finqa_match(pred, "no") is want      # PPG/2013/page_40.pdf-2: greater(288, 468)


def test_finqa_yes_gold():
    assert finqa_match("Yes", "yes") and not finqa_match("no", "yes")


@pytest.mark.parametrize("pred,gold", [
    (None, 0.56197), ("", 0.56197), ("n/a", 0.56197), ("about 56%", 0.56197),
    (float("nan"), 0.56197), (float("inf"), 0.56197), (np.float64("nan"), 1.0),
    (True, 1.0), ([56.2], 0.56197), ({"x": 1}, 1.0),
    (56.2, None), (56.2, "garbage"), (56.2, float("nan")), (1, True), ("yes", 1.0), (56.2, ["no"]),
])
def test_finqa_odd_input_is_false(pred, gold):
    assert finqa_match(pred, gold) is False


def test_finqa_numeric_string_gold():
    assert finqa_match(56.2, "0.56197")
    assert finqa_match("1,496.5", "1496.5")
    assert not math.isnan(float(finqa_match(1, 1)))   # returns a real bool
