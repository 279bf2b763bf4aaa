"""Answer extraction on messy generations: the answer, or None (scored wrong), never a crash."""
import pytest

from findap_jax.eval.extract import extract_choice, extract_label, extract_number, parse_number

LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize("text,want", [
    ("Selection: [[B]]", 1),
    ("Let's compute. FV = 11,966.81, so the closest is C.\nSelection: [[C]]", 2),
    ("Option A ignores compounding; B is annual. Selection: C", 2),
    ("[[A]] at first, but correcting myself: [[C]]", 2),          # last bracketed answer wins
    ("The answer is (b).", 1),
    ("Final answer: A", 0),
    ("B", 1),
    ("(C) because the duration is shorter", 2),
    ("A. $11,800.00", 0),
    ("A bond's price falls when yields rise.", None),               # the article, not option A
    ("C\nbecause duration is shorter", 2),
    ("A. $11,910.16\nB. $11,966.81\nC. $11,966.81\n\nStep-by-step", None),   # restated options
    ("A. 10.44%\nB. 12.47%\nThe answer is B", 1),
    ("I am not sure which option is right.", None),
    ("Selection: [[D]]", None),                                      # not an option here
    ("", None),
    ("Answer: D", None),
    ("The answer is a bit unclear.", None),                         # the article, not option A
    ("Selection: [[b]]", 1),
    ("The correct answer is:\nB. Real GDP grows", 1),               # colon after "answer is"
    ("The answer is : **C**", 2),
    ("**Answer:** **B**", 1),                                        # bold cue and bold letter
    ("**Final Answer:** **C**", 2),
    ("**B**", 1),
    ("**B.** Because the coupon is higher", 1),
    ("**(B)**", 1),
    ("**Selection:** **A**", 0),
    ("**A.** 10.44%\n**B.** 12.47%", None),                          # restated options in bold
])
def test_extract_choice(text, want):
    assert extract_choice(text, 3) == want


@pytest.mark.parametrize("text,want", [
    ("Positive", 2),
    ("negative.", 0),
    ("**Neutral**\n\nThe statement reports a fact.", 1),
    ("The sentiment of this statement is negative.", 0),
    ("Negative. Although revenue was positive, margins fell.", 0),  # leading label decides
    ("It could be neutral or positive.", None),                     # two labels, no lead
    ("neutral/positive", None),                                     # hedge
    ("I cannot determine the sentiment.", None),
    ("positively", None),                                           # not the label word
])
def test_extract_label(text, want):
    assert extract_label(text, LABELS) == want


@pytest.mark.parametrize("text,want", [
    ("Revenue grew from 1,240 to 1,395, so growth = 12.5%", 12.5),
    ("Step 1: 558 / 1395 = 0.4. Answer: 40", 40.0),
    ("The answer is $1,234.50 million (up 3% from 2022)", 1234.5),
    ("Answer: (12)", -12.0),                                        # accounting negative
    ("Answer: −4.17", -4.17),                                       # unicode minus
    ("The change is -4.17 percent.", -4.17),
    ("no figures at all", None),
    ("Answer: unknown", None),
    ("", None),
    ("Answer: 40\nNote: the answer is rounded to 2 decimal places.", 40.0),   # a later aside
    ("Answer: 12.5\n(This answer is based on the 2019 and 2020 figures.)", 12.5),
    ("Answer: Let me think. 3 items, so the final answer is 42", 42.0),   # the cue a number follows
    ("The answer is approximately 40 units", 40.0),
    ("Answer: (12.3%)", -12.3),                                     # accounting negative percent
    ("Answer: 1.2e3", 1200.0),
    ("Answer: -2.5E-3", -0.0025),
    ("Answer: $-12", -12.0),
    ("If the answer is 5%, then x = 6%.\nAnswer: the growth rate is 6%", 6.0),   # a hypothetical first
])
def test_extract_number(text, want):
    got = extract_number(text)
    assert got == pytest.approx(want) if want is not None else got is None


def test_parse_number_rejects_garbage():
    assert parse_number("--5") is None
    assert parse_number("12,345") == 12345.0


@pytest.mark.parametrize("junk", [None, 3, "\x00\x01", "[[", "Selection:", "(" * 50 + "1"])
def test_extractors_never_raise(junk):
    extract_choice(junk, 4)
    extract_label(junk, LABELS)
    extract_number(junk)
