"""Fuzzing the answer extractors: generations are arbitrary text, so every extractor must
give an answer of the right kind or None for any input, and stay fast on long ones."""
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from findap_jax.eval.extract import (LETTERS, extract_choice, extract_label, extract_number,
                                     extract_number_text, parse_number)
from tests.fuzz_strategies import FUZZ

# Pieces that steer the regexes into their branches: cues, option letters, brackets,
# currency, signs, separators, odd digits (Arabic-Indic, full-width), line ends, emoji, NUL.
FRAGMENTS = ["Answer:", "answer is ", "The final answer is ", "Final answer：", "Selection: ", "selection：",
             "[[", "]]", "(", ")", "Option ", "choice ", " is correct", " is the correct", "**", "A", "b",
             "C.", "D)", "E:", "J", "K", "(e)", "A. x\n", "\n", "\r\n", "\r", " ", "\t", "\u2028", "$", "€",
             "£", "-", "\u2212", ",", ".", "%", "0", "7", "1,234.5", "(12)", ".5", "٣", "１", "½", "1e5",
             "neutral", "Positive", "NEGATIVE", " or ", "/", "_", "'", '"', "{", "}", "é", "日本", "🙂", "\x00"]
messy = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=40).map("".join)
repeated = st.builds(lambda head, frag, n, tail: head + frag * n + tail, st.sampled_from(["", *FRAGMENTS]),
                     st.sampled_from(FRAGMENTS), st.integers(0, 3000), st.text(max_size=5))
texts = st.text() | messy | repeated
labels = st.lists(st.sampled_from(["negative", "neutral", "positive", "Neutral", "", " ", "(", "a.b", "\\",
                                   "N/A", "c++", "日本"]) | st.text(max_size=12), max_size=6)


@FUZZ
@given(texts, st.integers(-3, 30))
def test_extract_choice_gives_a_valid_index_or_none(text, n):
    got = extract_choice(text, n)
    assert got is None or (type(got) is int and 0 <= got < min(n, len(LETTERS)))


@FUZZ
@given(texts, labels)
def test_extract_label_gives_a_label_the_reply_contains(text, labs):
    got = extract_label(text, labs)
    assert got is None or (type(got) is int and 0 <= got < len(labs))
    if got is not None:
        assert labs[got].lower() in text.strip().lower()


@FUZZ
@given(texts)
def test_extract_number_is_the_parsed_text_it_found(text):
    tok = extract_number_text(text)
    num = extract_number(text)
    if tok is None:
        assert num is None
    else:   # written as in the reply, parseable, and what extract_number returns
        assert isinstance(tok, str) and tok in text.replace("\u2212", "-")
        assert isinstance(num, float) and num == parse_number(tok)


@FUZZ
@given(texts)
def test_parse_number_gives_a_float_or_none(token):
    got = parse_number(token)
    assert got is None or isinstance(got, float)


@pytest.mark.parametrize("junk", [None, 3, 2.5, b"Selection: [[B]]", ["A"], {"answer": "A"}])
def test_non_text_is_no_answer(junk):
    assert extract_choice(junk, 4) is None and extract_label(junk, ["neutral"]) is None
    assert extract_number(junk) is None and extract_number_text(junk) is None


@pytest.mark.parametrize("text", [
    "Selection: " + " " * 50_000 + "x",           # were quadratic: two adjacent \s* around `\**`
    "The answer is" + " " * 50_000 + "x",
    "answer:" + "\n" * 50_000,                    # was quadratic: (?m)^\s* across blank lines
    " \n" * 50_000 + "x",
    "(" * 100_000, "1," * 50_000, "answer is " * 20_000 + "1",
])
def test_long_replies_stay_fast(text):
    t0 = time.perf_counter()
    extract_choice(text, 4), extract_label(text, ["negative", "neutral"]), extract_number(text)
    assert time.perf_counter() - t0 < 2.0


def test_blank_run_fix_keeps_the_answers():
    assert extract_choice("Selection: ** B", 4) == 1
    assert extract_choice("The answer is option **(c)", 4) == 2
    assert extract_choice("A. 5%\n\n   B. 6%\nSo the answer", 4) is None   # restated options
    assert extract_choice("A. 5%\n \r\n B) 6%", 4) is None
