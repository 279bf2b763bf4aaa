"""GenRM reply parsing: fenced, trailing text, single quotes, garbage; retries counted."""
import pytest

from findap_jax.distill.judge import FAP_KEYS, SCP_KEYS, ask, ask_each, parse_json, parse_reply


@pytest.mark.parametrize("text", [
    '{"Justification": "ok", "Correctness": "correct"}',
    'Sure!\n```json\n{"Justification": "ok", "Correctness": "correct"}\n```\nHope this helps.',
    "{'Justification': 'ok', 'Correctness': 'Correct'}",
    'Here: {"Justification": "uses {braces} and \\"quotes\\"", "Correctness": "correct"} -- done',
])
def test_parse_variants(text):
    assert parse_reply(text, FAP_KEYS)["Correctness"] == "correct"


@pytest.mark.parametrize("text", [
    "", "no json here", "{", '{"Justification": "x"}', '{"Justification": "x", "Correctness": "maybe"}',
    '{"Justification": 3, "Correctness": "wrong"}', "{{{{", None, "[1, 2]",
])
def test_unparseable_is_none_never_raises(text):
    assert parse_reply(text, FAP_KEYS) is None


def test_incorrect_means_wrong_and_keys_are_case_insensitive():
    r = parse_reply('{"justification": "j", "CORRECTNESS": "incorrect"}', FAP_KEYS)
    assert r == {"Justification": "j", "Correctness": "wrong"}
    assert parse_json('x {"a": {"b": 1}} y') == {"a": {"b": 1}}


def test_ask_retries_only_failures_and_counts_them():
    calls = []

    def judge(prompts, attempt):
        calls.append((list(prompts), attempt))
        return ['{"Justification": "j", "Correctness": "wrong"}' if (p == "a" or attempt == 2) else "garbage"
                for p in prompts]

    out, failures = ask(judge, ["a", "b", "c"], FAP_KEYS, retries=2)
    assert [o["Correctness"] for o in out] == ["wrong"] * 3
    assert failures == 4 and calls[1] == (["b", "c"], 1) and calls[2] == (["b", "c"], 2)
    out, failures = ask(lambda ps, a: ["nope"] * len(ps), ["x"], SCP_KEYS, retries=1)
    assert out == [None] and failures == 2


@pytest.mark.parametrize("text", [
    'Returns used: {"y1": 0.18, "y2": -0.12}\n{"Justification": "ok", "Correctness": "wrong"}',
    'Format {"Correctness": "correct" or "wrong"}. Mine: {"Justification": "ok", "Correctness": "wrong"}',
    '{"verdict": {"Justification": "ok", "Correctness": "wrong"}}',
])
def test_the_object_with_the_keys_wins_over_earlier_ones(text):
    assert parse_reply(text, FAP_KEYS) == {"Justification": "ok", "Correctness": "wrong"}


def test_a_judge_that_drops_replies_is_an_error():
    with pytest.raises(ValueError, match="the judge returned 1 replies for 3 prompts"):
        ask_each(lambda ps, a: ['{"Justification": "j", "Correctness": "wrong"}'], ["p1", "p2", "p3"], FAP_KEYS, 2)
