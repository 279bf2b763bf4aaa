"""Official scoring semantics of TAT-QA and FinQA, reimplemented (no code copied).

TAT-QA  -- mirrors NExTplusplus/TAT-QA `tatqa_metric.py` (`TaTQAEmAndF1.__call__`,
           `get_answer_str`, `add_percent_pred`, `get_metrics`, `extract_gold_answers`)
           and `tatqa_utils.py` (`normalize_answer`, `is_number`, `to_number`, `scale_to_num`).
FinQA   -- mirrors czyssrs/FinQA `code/evaluate/evaluate.py` (`eval_program` rounds the
           executed result with `round(x, 5)`; `evaluate_result` counts it correct iff it
           `==` the stored `qa.exe_ans`, itself a 5-decimal float or "yes"/"no"), widened
           for free-text numbers as documented on `finqa_match`.

Nothing here raises: odd input (None, empty, garbage, wrong types) scores 0 / False.
"""
from __future__ import annotations

import itertools
import math
import re
import string
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import numpy as np

__all__ = ["finqa_match", "parse_tatqa_prediction", "tatqa_normalize", "tatqa_score"]

# --------------------------------------------------------------------------------------
# TAT-QA: number handling (tatqa_utils.py semantics)
# --------------------------------------------------------------------------------------

# Checked in this order, by substring, case-insensitively (so "hundred thousand" -> 100,
# "millions" -> 1e6), exactly like the official scale_to_num.
_SCALE_WORDS = (("hundred", 100), ("thousand", 1000), ("million", 1000000),
                ("billion", 1000000000), ("percent", 0.01))
_NUM_JUNK = frozenset("'\"\\$€£¥%(),[]")          # dropped before reading a number
_FIRST_NUM = re.compile(r"([+-]?\d+(\.\d+)?)|([+-]?\.\d+)")
_WORD_AFTER_NUM = re.compile(r"[\d.]+\s?[a-zA-Z]+")
_PAREN_NEG = re.compile(r"\([\d.\s]+\)")
_PCT = re.compile(r"[\d.\s]+%")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def _scale_factor(scale) -> float:
    """Multiplier a scale word stands for; anything unrecognised is 1."""
    low = str(scale or "").lower()
    for word, factor in _SCALE_WORDS:
        if word in low:
            return factor
    return 1


def _drop_num_junk(text) -> str:
    return "".join(ch for ch in str(text) if ch not in _NUM_JUNK)


def _is_number(text: str) -> bool:
    """Official `is_number`: the first whitespace word (currency/%/commas/brackets dropped)
    parses as a float that is not NaN, and a second word, if any, must be a scale word
    ("1 million" is a number, "5 apples" is not). Python's float() is the parser, so
    "inf" and "1e5" count as numbers, as upstream."""
    words = " ".join(_drop_num_junk(w) for w in str(text).split()).split()
    if not words:
        return False
    try:
        value = float(words[0])
    except ValueError:
        return False
    if math.isnan(value):
        return False
    return len(words) < 2 or _scale_factor(words[1]) != 1


def _first_number(text):
    m = _FIRST_NUM.search(_drop_num_junk(text))
    if m is None or m.group(1) is None:   # upstream reads only the first alternative
        return None
    tok = m.group(1)
    return float(tok) if "." in tok else int(tok)


def _to_number(text: str):
    """Official `to_number`: first number x scale word right after a number x (-1 if
    written "(123)") x (0.01 if written "12%"), rounded to 4 decimals; None if no number."""
    text = str(text)
    num = _first_number(text)
    if num is None:
        return None
    m = _WORD_AFTER_NUM.search(text)
    word_scale = _scale_factor(m.group(0).lower()) if m else 1
    sign = -1 if _PAREN_NEG.search(text.strip()) else 1
    pct = 0.01 if _PCT.search(text.strip()) else 1
    return round(num * word_scale * sign * pct, 4)   # same operand order as upstream


def tatqa_normalize(text: str) -> str:
    """Official `normalize_answer`: per space-separated token lowercase, drop punctuation
    unless the token is a number, rewrite numbers as str(to_number) ("1,234.0" -> "1234.0",
    "12%" -> "0.12"), remove articles, squeeze whitespace; empty tokens dropped."""
    out = []
    for tok in str(text).split(" "):
        tok = tok.lower()
        if not _is_number(tok):   # punctuation kept inside numbers ("-1,234.5", "12%")...
            tok = "".join(ch for ch in tok if ch not in _PUNCT)
        if _is_number(tok):       # ...and re-checked after stripping ("4+" -> "4")
            tok = str(_to_number(tok))
        tok = " ".join(_ARTICLES.sub(" ", tok).split())
        if tok.strip():
            out.append(tok)
    return " ".join(out).strip()


# --------------------------------------------------------------------------------------
# TAT-QA: DROP-style EM / F1 (tatqa_metric.py semantics)
# --------------------------------------------------------------------------------------

def _bag_f1(pred: set, gold: set) -> float:
    common = len(pred & gold)
    precision = common / len(pred) if pred else 1.0
    recall = common / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _best_alignment(scores: np.ndarray) -> list:
    """Optimal one-to-one gold<->prediction assignment maximising summed F1 (upstream uses
    scipy's linear_sum_assignment; brute force fallback for small inputs)."""
    n_gold, n_pred = scores.shape
    try:
        from scipy.optimize import linear_sum_assignment
        rows, cols = linear_sum_assignment(-scores)
        return list(zip(rows.tolist(), cols.tolist()))
    except Exception:   # noqa: BLE001 - scipy missing; sizes here are tiny
        best, best_pairs = -1.0, []
        if n_gold <= n_pred:
            for perm in itertools.permutations(range(n_pred), n_gold):
                pairs = list(zip(range(n_gold), perm))
                total = sum(scores[r, c] for r, c in pairs)
                if total > best:
                    best, best_pairs = total, pairs
        else:
            for perm in itertools.permutations(range(n_gold), n_pred):
                pairs = list(zip(perm, range(n_pred)))
                total = sum(scores[r, c] for r, c in pairs)
                if total > best:
                    best, best_pairs = total, pairs
        return best_pairs


def _drop_em_f1(pred_spans: list, gold_spans: list) -> tuple:
    """Official `get_metrics`: EM iff the normalised spans are equal as sets and counts;
    F1 = mean over max(len) slots of the aligned per-span token-set F1, rounded (numpy) to 2
    decimals. NB the official TAT-QA pipeline always calls this with ONE span a side: the
    spans of a multi-span answer are sorted and joined first (see `_answer_string`)."""
    p_norm = [tatqa_normalize(s) for s in pred_spans]
    g_norm = [tatqa_normalize(s) for s in gold_spans]
    em = 1.0 if set(p_norm) == set(g_norm) and len(p_norm) == len(g_norm) else 0.0
    p_bags = [set(s.split()) for s in p_norm]
    g_bags = [set(s.split()) for s in g_norm]
    scores = np.zeros([len(g_bags), len(p_bags)])
    for gi, g in enumerate(g_bags):
        for pi, p in enumerate(p_bags):
            scores[gi, pi] = _bag_f1(p, g)
    slots = np.zeros([max(len(g_bags), len(p_bags))])
    for r, c in _best_alignment(scores):
        slots[r] = max(slots[r], scores[r, c])
    return em, float(np.round(np.mean(slots), 2))


def _answer_string(answers: list, scale: str) -> str:
    """Official `get_answer_str`: sort the spans, fold the scale into each one, join them
    with spaces into a single string. A number becomes '%.4f' % (round(x, 2) * scale factor)
    -- so "1,496.5"+million and "1496500000"+no-scale are the same answer -- except a number
    written with '%' which becomes its own fraction ('%.4f' % to_number). Text gets
    " <scale>" appended."""
    if all(isinstance(a, str) for a in answers):
        ordered = sorted(answers)
    else:                                   # upstream would raise on mixed types
        ordered = sorted(str(a) for a in answers)
    parts = []
    for ans in ordered:
        s = str(ans)
        num = _to_number(s) if _is_number(s) else None
        if num is None:
            if scale:
                s = s + " " + str(scale)
        elif "%" in s:
            s = f"{num:.4f}"
        else:
            s = f"{round(num, 2) * _scale_factor(scale):.4f}"
        parts.append(s)
    return " ".join(parts)


def _gold_spans(gold_answer, answer_type: str) -> list:
    """Official `extract_gold_answers`: span/multi-span keep the list, arithmetic is
    str(value), count is str(int(value))."""
    if answer_type in ("span", "multi-span"):
        return list(gold_answer) if isinstance(gold_answer, (list, tuple)) else [str(gold_answer)]
    if answer_type == "count":
        try:
            return [str(int(gold_answer))]
        except (TypeError, ValueError):
            return [str(gold_answer)]
    return [str(gold_answer)]   # upstream str()s even a list here: "['34.12']" reads as 34.12


def tatqa_score(pred_answer, pred_scale, gold_answer, gold_scale, answer_type) -> tuple:
    """(em, f1) of one prediction, as the official TaTQAEmAndF1.__call__ scores it.

    Rules (all upstream): both sides go through `_answer_string` (scale folded into the
    number, spans sorted+joined); a single unscaled numeric prediction also gets a second
    chance as its raw value ('%.4f' % to_number), so 0.2342 matches 23.42+percent; the best
    (em, f1) tuple over those candidates wins; for arithmetic and count golds f1 := em.
    A numeric answer with the wrong scale therefore fails unless the product still agrees.

    Deliberate deviations (inputs upstream crashes on or mis-reads): a float/int
    prediction is turned into str first (upstream treats 0.0 as "no prediction"); a blank
    prediction ("  ", [""]) scores 0 (upstream can give it F1 credit for the scale word it
    appends to both sides); scales that are None become ""; any exception scores (0, 0).
    Checked against the official scorer on every TAT-QA dev question x ~22 predictions
    and 100k fuzzed inputs: identical wherever upstream does not raise.
    """
    try:
        if pred_answer is None or isinstance(pred_answer, bool):
            return 0.0, 0.0
        if isinstance(pred_answer, (list, tuple)):
            preds = [p for p in pred_answer if p is not None]
            if not preds or not any(str(p).strip() for p in preds):
                return 0.0, 0.0
        elif isinstance(pred_answer, (int, float, np.integer, np.floating)):
            if not math.isfinite(float(pred_answer)):
                return 0.0, 0.0
            preds = [str(pred_answer)]
        else:
            if not str(pred_answer).strip():
                return 0.0, 0.0
            preds = [str(pred_answer)]
        pred_scale = "" if pred_scale is None else str(pred_scale).strip()
        gold_scale = "" if gold_scale is None else str(gold_scale).strip()
        if gold_answer is None:
            return 0.0, 0.0
        gold = _gold_spans(gold_answer, str(answer_type or ""))
        if not gold:
            return 0.0, 0.0

        gold_str = _answer_string(gold, gold_scale)
        candidates = [_answer_string(preds, pred_scale)]
        # add_percent_pred: one span, no scale, no '%', numeric -> also try its raw value
        if len(preds) == 1:
            only = str(preds[0])
            if not pred_scale and "%" not in only and _is_number(only):
                raw = _to_number(only)
                if raw is not None:
                    candidates.append(f"{raw:.4f}")
        em, f1 = max(_drop_em_f1([c], [gold_str]) for c in candidates)
        if answer_type in ("arithmetic", "count"):
            f1 = em
        return float(em), float(f1)
    except Exception:   # noqa: BLE001 - a scorer must never take an eval run down
        return 0.0, 0.0


# --------------------------------------------------------------------------------------
# TAT-QA: reading a free-form generation
# --------------------------------------------------------------------------------------

_ANSWER_CUE = re.compile(r"answer\s*[:：]", re.IGNORECASE)
# only where no "Answer:" is, and only followed by a number ("the answer is based on ..." is prose)
_ANSWER_IS = re.compile(r"answer\s*is\b\s*[:：]?(?=[\s*_]*[-+$(]?\s*\d)", re.IGNORECASE)
# a number (and its scale word) followed by an explanation in brackets: "12.5% (5 / 40)"
_NUMBER_THEN_ASIDE = re.compile(r"^([-+$]?\s*\d[\d,]*(?:\.\d+)?\s*(?:%|[A-Za-z]+)?)\s*\([^()]*\)$")
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d+[.)])\s+")
_SCALE_IN_TEXT = (
    ("percent", re.compile(r"\s*(?:%|\bper\s?cents?\b|\bpercent(?:age)?s?\b)", re.IGNORECASE)),
    ("thousand", re.compile(r"\s*\bthousands?\b", re.IGNORECASE)),
    ("million", re.compile(r"\s*\bmillions?\b", re.IGNORECASE)),
    ("billion", re.compile(r"\s*\bbillions?\b", re.IGNORECASE)),
)


def _clean_span(span: str) -> str:
    span = span.strip().strip("*_`").strip()
    span = re.sub(r"^[\"'“”‘’]+|[\"'“”‘’]+$", "", span).strip()
    return re.sub(r"[.,;:]+$", "", span).strip()


def _split_scale(span: str) -> tuple:
    """Strip the first scale word / % sign out of a span that contains a digit."""
    if not re.search(r"\d", span):
        return span, ""
    for name, pat in _SCALE_IN_TEXT:
        if pat.search(span):
            return " ".join(pat.sub(" ", span).split()), name
    return span, ""


def parse_tatqa_prediction(text) -> tuple:
    """(answer, scale) from a model generation. Scope: the text after the LAST "Answer:"
    (or, without one, the last "answer is"; first non-empty line of it, unless it is a
    bullet list), else the last non-empty line. A bracketed aside after a number is dropped.
    Spans split on "|", ";" or newline bullets; more than one span -> list[str]. In spans
    with a digit, a scale word (thousand/million/billion/percent, plural ok) or "%" is
    removed and becomes the scale (the first one found wins). ("", "") when nothing usable."""
    try:
        if not isinstance(text, str) or not text.strip():
            return "", ""
        text = text.replace("\u2212", "-")
        cues = list(_ANSWER_CUE.finditer(text)) or list(_ANSWER_IS.finditer(text))
        scope = text[cues[-1].end():] if cues else text
        lines = [ln for ln in scope.splitlines() if ln.strip()]
        if not lines:
            return "", ""
        bullets = [ln for ln in lines if _BULLET.match(ln)]
        one_dash = len(lines) == 1 and re.match(r"^\s*[-*•·]\s+", lines[0])   # "4. text" is no list
        if len(bullets) >= 2 or one_dash:
            raw = [_BULLET.sub("", ln) for ln in bullets]
        else:
            raw = [lines[0] if cues else lines[-1]]
        spans = []
        for chunk in raw:
            spans.extend(re.split(r"\s*[|;]\s*", chunk))
        scale = ""
        answers = []
        for s in spans:
            s = _clean_span(s)
            s, found = _split_scale(s)   # first: the scale word may stand in the aside ("(in thousands)")
            s = _clean_span(_NUMBER_THEN_ASIDE.sub(r"\1", s))
            if found and not scale:
                scale = found
            if s:
                answers.append(s)
        if not answers:
            return "", ""
        return (answers[0] if len(answers) == 1 else answers), scale
    except Exception:   # noqa: BLE001
        return "", ""


# --------------------------------------------------------------------------------------
# FinQA execution accuracy
# --------------------------------------------------------------------------------------

# sign, "$", sign ("-$12" or "$-12"), digits, exponent, "%"
_FINQA_NUM = re.compile(r"^\(?([+-]?)\$?\s*([+-]?)((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)"
                        r"((?:[eE][+-]?\d+)?)\s*(%?)\)?$")


def _as_decimal(value):
    """Decimal of the number as written (floats via repr, so 56.2 keeps 1 decimal)."""
    try:
        d = Decimal(repr(float(value))) if isinstance(value, (float, np.floating)) else Decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        return None
    return d if d.is_finite() else None


def _parse_pred(pred):
    """(Decimal value as written, had_percent_sign) or None. Accepts numbers and number
    strings like "56.2", "-12.4%", "$1,234.5", "$-12", "(3.2)", "1.2e3"; not prose."""
    if isinstance(pred, bool) or pred is None:
        return None
    if isinstance(pred, (int, float, np.integer, np.floating)):
        d = _as_decimal(pred if isinstance(pred, (float, np.floating)) else int(pred))
        return (d, False) if d is not None else None
    s = str(pred).strip().replace("\u2212", "-").rstrip(".").strip()
    m = _FINQA_NUM.match(s)
    if not m:
        return None
    sign, sign_after, digits, exponent, pct = m.groups()
    if sign and sign_after:
        return None
    neg = "-" in (sign, sign_after)
    neg = neg != (s.startswith("(") and s.endswith(")"))
    body = digits.replace(",", "").removesuffix(".") + exponent
    d = _as_decimal(("-" if neg else "") + body)
    return (d, pct == "%") if d is not None else None


def _round_half_up(d: Decimal, places: int) -> Decimal:
    return d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def finqa_match(pred, gold_exe_ans, *, min_sig_digits: int = 2) -> bool:
    """Is the model's final answer right for a FinQA gold `exe_ans`?

    Official rule mirrored: czyssrs/FinQA code/evaluate/evaluate.py -- `eval_program` ends
    with `this_res = round(this_res, 5)` and `evaluate_result` counts a hit iff
    `exe_res == gold_res` (`qa.exe_ans`: a float stored at <=5 decimals, with percents as
    fractions, 0.56197 for "56%"; or the string "yes"/"no" for `greater` programs).

    Implemented, for a prediction P (a "%" sign is dropped) and targets T = {gold, gold*100}
    (gold*100 because percents are usually stored as fractions; plain gold too, because
    some percent golds are stored in percent units, e.g. 80.0 for "80%"):
      1. yes/no gold: P, lowercased and stripped of surrounding punctuation, equals it.
      2. official: round(P, 5) == round(T, 5) for some T.
      3. stated precision: P written with d < 5 decimals (floats: as repr shows them) and
         at least `min_sig_digits` (2) significant digits matches if T rounded half-up to
         d decimals == P. So 56.2, "56.2%", 0.562 and 56 all match 0.56197; 56.3, "1"
         (1 digit) and "0" do not; "0.5%" for 0.00455 does not (1 significant digit).
         Two digits is the precision FinQA's own annotated `answer` strings use ("56%",
         "1.5"); pass min_sig_digits=3 for a stricter check.
    Rule 3 and the gold*100 target are our widening for free-text LLM answers (the
    official scorer executes programs, so it never sees a rounded or percent-scaled
    number); with 5+ decimals the check is exactly the official one. None, NaN/inf,
    prose, or a number vs a yes/no gold -> False.
    """
    try:
        if pred is None or gold_exe_ans is None or isinstance(gold_exe_ans, bool):
            return False
        # yes/no golds ("greater" programs)
        if isinstance(gold_exe_ans, str):
            g = gold_exe_ans.strip().lower()
            if g in ("yes", "no"):
                return isinstance(pred, str) and pred.strip().strip(".!*\"' ").lower() == g
            gold_d = _as_decimal(g.replace(",", ""))
        else:
            gold_d = _as_decimal(gold_exe_ans)
        if gold_d is None:
            return False
        parsed = _parse_pred(pred)
        if parsed is None:
            return False
        p, _had_pct = parsed
        targets = [gold_d, gold_d * 100]   # '%' is not binding: golds come in both units
        p_float = float(p)
        if not math.isfinite(p_float):
            return False
        for t in targets:
            if round(p_float, 5) == round(float(t), 5):               # official rule
                return True
        written = p.as_tuple()                       # digits as written, no leading zeros
        places = max(0, -written.exponent)
        sig = 0 if p == 0 else len(written.digits)
        if places >= 5 or sig < max(1, int(min_sig_digits)):
            return False
        return any(_round_half_up(t, places) == p for t in targets)
    except Exception:   # noqa: BLE001
        return False
