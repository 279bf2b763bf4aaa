"""The bundled training files: built from train splits only, the FIN5 split, every HH-RLHF
pair kept or counted, FinQA programs executed, and (with ../shared/data beside the
repository) a rebuild that reproduces every bundled file byte for byte."""
import filecmp
import re
from pathlib import Path

import pytest

from findap_jax.data import bundle_benchmarks as bb
from findap_jax.data.bundle import BUNDLED, FPB_INSTRUCTIONS, build
from findap_jax.data.records import expand, read_records, validate
from findap_jax.data.registry import default_specs
from findap_jax.eval.benchmarks import fin5_split
from findap_jax.eval.tasks import get_task, load_rows, resolve_files

SHARED = Path(__file__).parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/data beside the repository")


def _records(name, kind="chat"):
    return [rec for _, rec in read_records(str(BUNDLED / name), kind)]


def _filled(templates, text) -> dict:
    """The fields a prompt filled into whichever of `templates` it was made from."""
    for t in templates:
        pat = re.sub(r"\\\{(\w)\\\}", r"(?P<\1>.*)", re.escape(t))
        m = re.fullmatch(pat, text, re.S)
        if m:
            return m.groupdict()
    raise AssertionError(f"prompt made from no template: {text[:80]!r}")


def _field(name, templates, key):
    return [_filled(templates, r["messages"][0]["content"])[key] for r in _records(name)]


def test_finance_it_is_built_from_train_splits_only():
    files = {str(Path(f).relative_to(BUNDLED)) for f in expand(default_specs()["finance_it"].files["train"])}
    assert files == {"fpb/train.jsonl", "finance_it/concepts_qa.jsonl", "finance_it/tweets_train.jsonl",
                     "finance_it/fin5_train.jsonl", "finance_it/finqa_train.jsonl"}
    tweets = [t.strip() for t in _field("finance_it/tweets_train.jsonl", bb.TWEET_INSTRUCTIONS, "t")]
    valid = {r["text"].strip() for r in load_rows(get_task("tweets_sentiment"))}
    assert len(tweets) == 1993 and not set(tweets) & valid
    fin5 = _field("finance_it/fin5_train.jsonl", bb.NER_INSTRUCTIONS, "s")
    test = {r["text"] for r in load_rows(get_task("finner"))}
    assert len(fin5) == 778 and not set(fin5) & test and {fin5_split(s) for s in fin5} == {"train"}
    questions = {q.strip() for q in _field("finance_it/finqa_train.jsonl", bb.FINQA_INSTRUCTIONS, "q")}
    dev = {r["question"].strip() for r in load_rows(get_task("finqa"))}
    assert len(questions) == 93 and not questions & dev
    fpb = _field("fpb/train.jsonl", FPB_INSTRUCTIONS, "s") + _field("fpb/dev.jsonl", FPB_INSTRUCTIONS, "s")
    assert len(fpb) == 3330 + 472 and not set(fpb) & {r["text"] for r in load_rows(get_task("fpb"))}


def test_ner_chats_answer_in_the_format_finner_scores():
    from findap_jax.eval.scoring import parse_entities
    chats, left = bb.fin5_train(resolve_files(get_task("finner"))[0])   # the bundled FIN5 copy
    assert len(chats) + sum(left.values()) == 1164 and len(chats) == 832
    with_entities = [c for c in chats if c["messages"][1]["content"] != "None"]
    assert with_entities and all(parse_entities(c["messages"][1]["content"]) for c in with_entities)


def test_hh_pairs_keep_the_shared_dialogue_and_split_the_last_turn():
    head = "\n\nHuman: Can you help me?\n\nAssistant: Sure.\n\nHuman: What is a bond?"
    rec = bb.hh_pair(head + "\n\nAssistant: A loan to an issuer.", head + "\n\nAssistant: No idea.")
    assert rec == {"messages": [{"role": "user", "content": "Can you help me?"},
                                {"role": "assistant", "content": "Sure."},
                                {"role": "user", "content": "What is a bond?"}],
                   "chosen": "A loan to an issuer.", "rejected": "No idea."}
    assert validate("preference", rec)["chosen"] == "A loan to an issuer."
    # two assistant turns in a row are one turn
    two = bb.hh_pair(head + "\n\nAssistant: A loan.\n\nAssistant: It pays coupons.",
                     head + "\n\nAssistant: No.")
    assert two["chosen"] == "A loan.\n\nIt pays coupons."
    with pytest.raises(ValueError, match="differ before"):
        bb.hh_pair(head + "\n\nAssistant: A.", "\n\nHuman: Something else?\n\nAssistant: B.")
    with pytest.raises(ValueError, match="empty last"):
        bb.hh_pair(head + "\n\nAssistant: A.", head + "\n\nAssistant: ")
    with pytest.raises(ValueError, match="start with"):
        bb.hh_turns("Assistant: hello")


def test_bundled_hh_pairs_are_valid_preference_records():
    recs = _records("general_preference/hh_rlhf.jsonl", "preference")
    assert len(recs) == 998 and all(r["messages"][-1]["role"] == "user" for r in recs)
    assert (BUNDLED / "general_preference" / "hh_rlhf.jsonl").stat().st_size < 1_500_000


@needs_shared
def test_hh_rlhf_converter_keeps_or_counts_every_pair():
    rows, left = bb.hh_rlhf(str(SHARED / "hh_rlhf" / "harmless-base" / "test.jsonl.gz"))
    assert len(rows) + sum(left.values()) == 1000 and left == {"an empty last assistant turn": 2}
    assert rows == _records("general_preference/hh_rlhf.jsonl", "preference")   # none overlapped eval


def test_finqa_programs_are_executed_step_by_step():
    lines, res = bb.run_finqa_program("add(500, 350), divide(#0, 2248), multiply(#1, const_100)", [])
    assert lines == ["Step 1: 500 + 350 = 850", "Step 2: 850 / 2248 = 0.37811",
                     "Step 3: 0.37811 * 100 = 37.811"]
    assert res == pytest.approx(37.811)
    table = [["", "2019", "2018"], ["net sales", "$ 1,200", "$ 800"]]
    lines, res = bb.run_finqa_program("table_average(net sales, none), greater(#0, const_1000)", table)
    assert lines[0] == 'Step 1: the average of the "net sales" row (1200, 800) is 1000' and res is False
    assert bb._percent_line("34.7%", 0.34719) == ["In percent: 34.719%"] and bb._percent_line("34.7", 0.347) == []
    for bad in ("median(1, 2)", "divide(1, 2) trailing", "table_sum(gross margin, none)"):
        with pytest.raises(ValueError):
            bb.run_finqa_program(bad, table)
    answers = [r["messages"][1]["content"] for r in _records("finance_it/finqa_train.jsonl")]
    assert all(a.startswith("Step 1: ") and re.search(r"\nAnswer: \S", a) for a in answers)


@pytest.mark.slow
@needs_shared
def test_rebuild_reproduces_every_bundled_file(tmp_path):
    counts = build(str(SHARED), tmp_path)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(built) == 20
    _, mismatch, errors = filecmp.cmpfiles(BUNDLED, tmp_path, [str(p) for p in built], shallow=False)
    assert mismatch == [] and errors == []

    def total(name):   # kept + left out + dropped: what the source had
        return sum(n for k, n in counts.items() if k.startswith(name) and "paragraphs" not in k
                   and "sentences cut" not in k)
    assert total("general_preference/hh_rlhf.jsonl") == 1000
    assert total("finance_it/fin5_train.jsonl") == 1164
    assert total("finance_it/tweets_train.jsonl") == 2000
    assert total("finance_it/finqa_train.jsonl") == 100
    assert total("finance_cpt/sec_10k.jsonl") == 13 * 4   # items 1, 1A, 7, 7A of 13 filings
