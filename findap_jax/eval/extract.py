"""Answer extraction from free-form generations. Every extractor returns None when it
finds no usable answer (the scorer counts None as wrong); where a chain of thought states
several, the final one wins. None of them raise on any string."""
from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJ"

# Strongest signal first; within a pattern the last match wins (chain-of-thought models
# restate options before concluding). Cue words match any case; a letter must be upper
# case unless bracketed ("answer is a bit unclear" is not option A, "answer is (b)" is B).
_LETTER = r"(?:\(([A-Ja-j])\)|([A-J])(?![\w']))"
# Markdown bold may close the cue and open the letter ("**Answer:** **B**"): `_BOLD` allows
# two runs of asterisks, each followed by blanks (`\*+\s*` twice, not `\s*\**\s*`: two
# adjacent \s* backtrack quadratically on long blanks)
_BOLD = r"(?:\*+\s*){0,2}"
_CHOICE_PATTERNS = (
    r"\[\[\s*([A-Ja-j])\s*\]\]",
    r"(?i:selection)\**\s*[:：]\s*" + _BOLD + _LETTER,
    r"(?i:(?:final\s+)?answer\s*(?:is(?:\s*[:：])?|:|：))\s*(?i:option\s*)?" + _BOLD + _LETTER,
    r"(?i:option|choice)\s+" + _LETTER + r"\s+(?i:is\s+(?:the\s+)?correct)",
)


def extract_choice(text: str, n_choices: int) -> int | None:
    """Index of the option letter the text settles on: `[[B]]`, `Selection: B`,
    `answer is B`, or a reply that opens with the letter (`B`, `(B) ...`, `B. ...`, `**B**`)."""
    if not isinstance(text, str) or n_choices < 1:
        return None
    valid = LETTERS[:n_choices]
    for pat in _CHOICE_PATTERNS:
        hits = [next(g for g in m.groups() if g).upper() for m in re.finditer(pat, text)]
        hits = [h for h in hits if h in valid]
        if hits:
            return valid.index(hits[-1])
    # a reply that opens with the letter: "B", "(B)", "B.", "B)" or "B:" (not the article "A ...")
    # ... unless it restates the options ("A. ...\nB. ..."), which is no answer at all
    # (indent is [^\S\n]*: a \s* that may cross line ends is quadratic on long blank runs)
    if len(set(re.findall(r"(?m)^[^\S\n]*[*_]*\(?([A-J])[*_]*[.)]", text))) >= 2:
        return None
    m = re.match(r"\s*[*_]*\(?([A-J])(?:\)?[*_]*)(?:[.):]|\s*$|\s*\n)", text)
    if m and m.group(1) in valid:
        return valid.index(m.group(1))
    return None


def extract_label(text: str, labels: list[str]) -> int | None:
    """Index of the label word a classification reply gives: the label it starts with, else
    the only label it mentions; replies naming several labels (or none) are None."""
    if not isinstance(text, str):
        return None
    low = text.strip().lower()
    words = [lab.lower() for lab in labels]
    for w in sorted(words, key=len, reverse=True):
        m = re.match(rf"[\W_]*{re.escape(w)}\b", low)
        if m:   # "neutral or positive" / "neutral/positive" hedge: no answer
            return None if re.match(r"\s*(?:or\b|/)", low[m.end():]) else words.index(w)
    found = {i for i, w in enumerate(words) if re.search(rf"\b{re.escape(w)}\b", low)}
    return found.pop() if len(found) == 1 else None


# a number as written: accounting negatives "(12)" / "(12.3%)", currency, "1.2e3"
_NUMBER = re.compile(r"\(?-?[$€£]?\s?-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?(?:%(?=\)))?\)?")
_CUE = re.compile(r"answer\s*(?:is|:|：)", re.IGNORECASE)
# a cue followed at once by a number ("Answer: 40", "answer is $1,234"), past markdown
_NUMBER_NEXT = re.compile(r"[\s*_:]*(?:approximately\s+|about\s+|~\s*)?\(?-?[$€£]?\s?-?\.?\d")


def parse_number(token: str) -> float | None:
    """'$1,234.5' -> 1234.5, '(12)' -> -12 (accounting negative), '−3' -> -3."""
    t = token.strip().replace("\u2212", "-")
    neg = t.startswith("(") and t.endswith(")")
    t = re.sub(r"[()$€£,\s%]", "", t)
    mantissa, exponent = re.fullmatch(r"(.*?)((?:[eE][+-]?\d+)?)", t).groups()
    if mantissa.count("-") > 1:
        return None
    try:
        v = float(mantissa + exponent)
    except ValueError:
        return None
    return -v if neg else v


def extract_number(text: str) -> float | None:
    """The answer number: the first number after the answer cue (`answer_scope`), else the
    last number in the text. Percent signs are dropped (answers are in the unit asked for)."""
    tok = extract_number_text(text)
    return None if tok is None else parse_number(tok)


def answer_scope(text: str) -> str | None:
    """The text after the cue that gives the answer: from the last `Answer:` on (or the whole
    text without one), the last `Answer:` / `answer is` followed at once by a number, else the
    last cue ("the answer is approximately 40"). So a note after the answer ("Answer: 40\nNote:
    the answer is rounded to 2 places") does not replace it, nor does a hypothetical before it.
    None without a cue."""
    cues = list(_CUE.finditer(text))
    if not cues:
        return None
    colon = [m.start() for m in cues if not m.group(0).lower().rstrip().endswith("is")]
    if colon:   # an "answer is" before the last "Answer:" line is reasoning ("if the answer is 5%")
        cues = [m for m in cues if m.start() >= colon[-1]]
    ends = [m.end() for m in cues]
    direct = [end for end in ends if _NUMBER_NEXT.match(text, end)]
    return text[(direct or ends)[-1]:]


def extract_number_text(text: str) -> str | None:
    """The answer number as written (`extract_number` before parsing): scorers that round to
    the answer's own precision need "56", not 56.0."""
    if not isinstance(text, str):
        return None
    text = text.replace("\u2212", "-")
    scope = answer_scope(text)
    after_cue = scope is not None and re.search(r"\d", scope) is not None
    numbers = [m.group(0).strip() for m in _NUMBER.finditer(scope if after_cue else text)
               if re.search(r"\d", m.group(0))]
    if not numbers:
        return None
    tok = numbers[0] if after_cue else numbers[-1]
    if tok.startswith("(") != tok.endswith(")"):   # a bracket of the prose, not accounting style
        tok = tok.strip("()")
    return tok if parse_number(tok) is not None else None
