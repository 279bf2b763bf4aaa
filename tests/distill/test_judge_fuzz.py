"""Fuzzing the judge-reply parser: a GenRM writes anything (prose, fences, half an object,
Python-style quotes), and parse_json/parse_reply must give a value or None, never raise."""
import json
import string
import time

from hypothesis import given
from hypothesis import strategies as st

from findap_jax.distill.judge import FAP_KEYS, SCP_KEYS, ask, parse_json, parse_reply
from tests.fuzz_strategies import FUZZ

# Strings without backticks: a "```" inside a value would make its own fenced candidate.
plain = st.text(st.characters(blacklist_characters="`", blacklist_categories=("Cs",)), max_size=20)
scalars = (st.none() | st.booleans() | st.integers(-2**64, 2**64) | plain
           | st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(plain, inner, max_size=4), max_leaves=12)
objects = st.dictionaries(plain, values, max_size=5)

FRAGMENTS = ["{", "}", "{{", "[", "]", '"', "'", "\\", ":", ",", "```", "```json", "```json\n", "\n",
             '"Justification"', "'Correctness'", '"correct"', "'wrong'", "incorrect", "True", "None",
             "null", "1e999", "-", "0x" + "f" * 4000, "1" * 5000, "+1j", "1j", "**", "\x00", "\ud800",
             "\u2028", "日本", "🙂", "{'a': ", '{"a": ', "'''", '"""', "#", "lambda", "()", "b'x'"]
messy = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=30).map("".join)
# Python-literal objects (what ast.literal_eval reads): odd keys and values, huge numbers.
atoms = st.sampled_from(["'Justification'", '"Correctness"', "'correct'", "None", "True", "1", "-2.5",
                         "1e999", "0x" + "f" * 4000, "9" * 400 + "+1j", "1-2j", "b'x'", "()", "[1, 2]",
                         "{}", "{1, 2}", "'\\x00'", "-(-(1))"]) | plain.map(repr)
literals = st.lists(st.tuples(atoms, atoms).map(": ".join), max_size=4).map(lambda kv: "{" + ", ".join(kv) + "}")
texts = st.text() | messy | literals


def _check_reply(got, keys):
    if got is not None:
        assert set(got) == set(keys) and all(isinstance(v, str) for v in got.values())
        if "Correctness" in got:
            assert got["Correctness"] in ("correct", "wrong")


@FUZZ
@given(texts)
def test_any_text_gives_a_dict_or_none(text):
    obj = parse_json(text)
    assert obj is None or isinstance(obj, dict)
    for keys in (FAP_KEYS, SCP_KEYS):
        _check_reply(parse_reply(text, keys), keys)


@FUZZ
@given(objects, st.sampled_from(["", "Sure! ", "Here is my verdict:\n", "ok ] ) "]),
       st.sampled_from(["", "\nHope this helps.", " -- done", "\n\n"]))
def test_objects_are_found_bare_fenced_or_single_quoted(obj, before, after):
    assert parse_json(before + json.dumps(obj) + after) == obj
    assert parse_json(f"{before}```json\n{json.dumps(obj, indent=2)}\n```{after}") == obj
    assert parse_json(before + repr(obj) + after) == obj   # Python literal: single quotes, True, None


@FUZZ
@given(objects.filter(bool), st.data())
def test_truncated_objects_are_none(obj, data):
    for text in (json.dumps(obj), repr(obj)):
        cut = data.draw(st.integers(0, len(text) - 1))
        assert parse_json(text[:cut]) is None
        assert parse_json("```json\n" + text[:cut]) is None
        _check_reply(parse_reply(text[:cut], FAP_KEYS), FAP_KEYS)


key_case = st.sampled_from([str.lower, str.upper, str.title, lambda k: k, lambda k: f" {k} "])
verdicts = {"correct": "correct", "Correct": "correct", " WRONG ": "wrong", "incorrect": "wrong",
            "Incorrect": "wrong"}


@FUZZ
@given(plain, st.sampled_from(sorted(verdicts)), key_case, key_case,
       st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), values, max_size=3),
       st.booleans())
def test_valid_fap_replies_parse(just, verdict, case_j, case_c, extra, quotes):
    extra = {k: v for k, v in extra.items() if k.lower() not in ("justification", "correctness")}
    obj = {case_j("Justification"): just, case_c("Correctness"): verdict, **extra}
    text = repr(obj) if quotes else json.dumps(obj)
    assert parse_reply(text, FAP_KEYS) == {"Justification": just, "Correctness": verdicts[verdict]}


@FUZZ
@given(plain, values.filter(lambda v: not isinstance(v, str)))
def test_non_string_field_values_are_rejected(just, bad):
    assert parse_reply(json.dumps({"Justification": just, "Correctness": bad}), FAP_KEYS) is None


@FUZZ
@given(st.lists(texts, min_size=1, max_size=6), st.integers(0, 3))
def test_ask_counts_every_unparseable_reply(replies, retries):
    calls = []

    def judge(prompts, attempt):
        calls.append(list(prompts))
        return [replies[int(p)] for p in prompts]

    results, failures = ask(judge, [str(i) for i in range(len(replies))], FAP_KEYS, retries)
    parsed = [parse_reply(r, FAP_KEYS) for r in replies]
    bad = [str(i) for i, p in enumerate(parsed) if p is None]
    assert results == parsed
    # the judge repeats itself, so a bad reply fails every attempt; only bad ones are re-asked
    assert failures == len(bad) * (retries + 1)
    assert calls == [[str(i) for i in range(len(replies))]] + ([bad] * retries if bad else [])


def test_found_crashes_stay_fixed():
    # a hex integer key too long for str() (str(k) raised ValueError in parse_reply)
    huge_key = "{0x" + "f" * 5000 + ": 'x', 'Justification': 'j', 'Correctness': 'correct'}"
    assert parse_reply(huge_key, FAP_KEYS) == {"Justification": "j", "Correctness": "correct"}
    # literal_eval of <int too large for a float> + 1j raised OverflowError
    assert parse_json("{'a': " + "9" * 400 + "+1j}") is None
    assert parse_reply("{'Justification': 1" + "0" * 400 + "+1j, 'Correctness': 'wrong'}", FAP_KEYS) is None


def test_unclosed_fence_with_a_long_blank_run_stays_fast():
    t0 = time.perf_counter()   # `\s*(.*?)` after the fence was quadratic in the blank run
    assert parse_json("```json" + " \n" * 20_000 + "x") is None
    assert time.perf_counter() - t0 < 2.0


def test_fenced_object_with_surrounding_blanks():
    assert parse_json("```json\n\n   {\"a\": 1}  \n\n```") == {"a": 1}
    assert parse_json("```{'a': None}```") == {"a": None}
