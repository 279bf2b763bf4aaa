"""Open-ended QA scoring (FinanceBench): the answer span of a generation, the gold's numbers
found in it, and an LLM judge's verdict. ROUGE comes from metrics.rouge; numbers are
compared with the FinQA rounding rule (official.finqa_match). Nothing here raises on odd
generations or judge replies: they score 0 / count as unparseable."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from findap_jax.eval.official import finqa_match

_ANSWER_CUE = re.compile(r"answer\s*[:：]", re.IGNORECASE)


def answer_span(text) -> str | None:
    """What follows the last "Answer:" cue (else the whole reply), markdown emphasis and
    surrounding quotes dropped; None when nothing is left."""
    if not isinstance(text, str):
        return None
    parts = _ANSWER_CUE.split(text)
    span = parts[-1] if len(parts) > 1 and parts[-1].strip() else text
    span = span.replace("**", "").strip().strip("\"'`").strip()
    return span or None


# A number as written: digits with optional thousands commas and decimals, not glued to a
# word before it ("FY2022", "Q2") nor to one after it ("777X", "10K"), except the scale
# suffixes mn/bn/m/b/k ("$2,018mn").
_NUM = re.compile(r"(?<![\w.])((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?!\d|,\d)")
_AFTER_OK = re.compile(r"(?:mn|bn|[mbk])?(?![A-Za-z])")
_NEG_BEFORE = re.compile(r"(?:^|[^\w.])[-\u2212]\s?\$?\s?$")
_PCT_AFTER = re.compile(r"\s?(?:%|percent\b)")


def numbers(text, gold: bool = False) -> list[tuple[str, bool]]:
    """(number as written without commas, with its sign; followed by % or "percent") for
    each number of a text. For a gold answer (gold=True) years (1900-2100 written bare)
    and list markers "(1)" are not numbers of the answer."""
    if not isinstance(text, str):
        return []
    text = text.replace("\u2212", "-")
    out = []
    for m in _NUM.finditer(text):
        tok, start, end = m.group(1), m.start(), m.end()
        if not _AFTER_OK.match(text, end):
            continue
        pct = _PCT_AFTER.match(text, end) is not None
        if gold:
            bare = "," not in tok and "." not in tok and not pct and text[max(0, start - 1):start] != "$"
            if bare and 1900 <= int(tok) <= 2100:
                continue
            if bare and text[max(0, start - 1):start] == "(" and text[end:end + 1] == ")" and len(tok) == 1:
                continue
        neg = _NEG_BEFORE.search(text[max(0, start - 6):start]) is not None
        out.append((("-" if neg else "") + tok.replace(",", ""), pct))
    return out


def gold_numbers_found(gold: str, prediction) -> bool | None:
    """None when the gold answer has no number; else whether every number of the gold is
    matched by some number of the prediction under the FinQA rounding rule, with the gold
    as the rounded side: the prediction rounded to the gold's written precision equals it
    ("1.87%" matches a gold "1.9%", "24.257" matches "24.26", "1,616" matches "$1616.00";
    "24" does not match "24.26"). Percent-aware: a fraction (0.019) matches a percent gold
    (1.9%) and a percent (83%) a fraction gold (0.83). Scale words are not converted
    ("$2.0 billion" does not match "$2,018mn"): the judge mode is for that."""
    golds = numbers(gold, gold=True)
    if not golds:
        return None
    preds = []
    for tok, pct in numbers(prediction):
        try:
            preds.append((float(tok), pct))
        except ValueError:
            continue
    for g, g_pct in golds:
        cands = [v for p, p_pct in preds for v in ((p, p / 100) if p_pct and not g_pct else (p,))]
        if not any(finqa_match(g, v) for v in cands):
            return False
    return True


# -- LLM judge ---------------------------------------------------------------------------

JUDGE_PROMPT = (
    "You are grading an answer to a question about a company's financial filings.\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nProposed answer:\n{proposed}\n\n"
    "The proposed answer is correct if it gives the same facts and numbers as the reference "
    "(numbers agree at the reference's precision; other units are fine, e.g. $1.6 billion for "
    "$1,616 million); extra explanation is fine. It is wrong if it contradicts the reference, "
    "misses its main point or gives no answer. Reply with JSON only, exactly in this form:\n"
    "{{\"Correctness\": \"correct\" or \"wrong\", \"Justification\": \"<one sentence>\"}}")
JUDGE_MAX_NEW_TOKENS = 96      # "Correctness" comes first, so a cut reply still has the verdict
MAX_PROPOSED_CHARS = 2000      # the judge sees at most this much of the proposed answer

_KEYED = re.compile(r"correctness\W{0,6}(correct|incorrect|wrong)\b", re.IGNORECASE)
_LEADING = re.compile(r"[\s*_\"'`#>:-]*(correct|incorrect|wrong)\b", re.IGNORECASE)


def parse_verdict(reply) -> str | None:
    """"correct" / "wrong" from a judge reply, or None (unparseable). Read in this order: the
    JSON object (fenced, single-quoted or followed by text: distill.judge.parse_reply), a
    `Correctness: <verdict>` pair anywhere (malformed or cut JSON), a reply that opens with
    the verdict word. "incorrect" counts as wrong."""
    from findap_jax.distill.judge import parse_reply
    if not isinstance(reply, str):
        return None
    obj = parse_reply(reply, ("Correctness",))
    if obj is not None:
        return obj["Correctness"]
    m = _KEYED.search(reply) or _LEADING.match(reply)
    if m is None:
        return None
    return "correct" if m.group(1).lower() == "correct" else "wrong"


def judge_answers(judge: Callable[[list[str]], list[str]], rows: Sequence[dict],
                  answers: Sequence[str | None]) -> list[dict]:
    """Ask the judge about every answer (one greedy pass, no retries). Returns per row
    {"judge": "correct" | "wrong" | None (unparseable), "judge_reply": reply or None}; an
    empty answer is wrong without asking."""
    out = [{"judge": "wrong", "judge_reply": None} for _ in rows]
    asked = [i for i, a in enumerate(answers) if isinstance(a, str) and a.strip()]
    prompts = [JUDGE_PROMPT.format(question=rows[i].get("question", rows[i]["query"]).strip(),
                                   reference=rows[i]["answer"].strip(),
                                   proposed=answers[i].strip()[:MAX_PROPOSED_CHARS]) for i in asked]
    replies = judge(prompts) if prompts else []
    if len(replies) != len(prompts):
        raise ValueError(f"judge returned {len(replies)} replies for {len(prompts)} prompts")
    for i, reply in zip(asked, replies):
        out[i] = {"judge": parse_verdict(reply), "judge_reply": reply}
    return out
