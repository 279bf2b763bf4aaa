"""FAP and SCP pairs from judged trajectories: what makes a pair and what drops one."""
import pytest

from findap_jax.distill.pairs import fap_pairs, scp_pair
from findap_jax.distill.prompts import NEXT_STEP

TRAJ = "Step 1: Discount each cash flow.\nStep 2: Sum them to 99.9 by adding 5 + 5 = 11.\nSelection: [[B]]"
STEP = "Step 2: Sum them to 99.9 by adding 5 + 5 = 11."


def _reply(step=STEP, prefix="Step 1: Discount each cash flow.", fix="Step 2: Sum them to 95.2."):
    return {"First incorrect step": step, "Reasoning up to incorrect": prefix, "Step correction": fix}


def test_scp_pair_context_is_the_text_before_the_step():
    pair, why = scp_pair("PROMPT", {"text": TRAJ, "sample": 2}, _reply())
    assert why is None
    assert pair["prompt"] == "PROMPT\n\nStep 1: Discount each cash flow." + NEXT_STEP
    assert (pair["chosen"], pair["rejected"], pair["rejected_sample"]) == ("Step 2: Sum them to 95.2.", STEP, 2)
    first, _ = scp_pair("PROMPT", {"text": TRAJ, "sample": 0},
                        _reply(step="Step 1: Discount each cash flow.", prefix="", fix="Step 1: Compound."))
    assert first["prompt"] == "PROMPT" + NEXT_STEP


@pytest.mark.parametrize("reply,why", [
    (_reply(prefix="Step 1: Discount each cash flow.\n" + STEP), "prefix_not_just_before_step"),   # holds the step
    (_reply(prefix=""), "prefix_not_just_before_step"),                  # step 2 without step 1
    (_reply(prefix="Step 0: invented."), "prefix_not_verbatim"),
    (_reply(step="5 + 5 = 11."), "step_not_whole_lines"),                # a fragment of the line
    (_reply(step="Step 2: Sum them to 99.9"), "step_not_whole_lines"),
    (_reply(step="Step 9: invented."), "step_not_verbatim"),
    (_reply(fix=STEP), "empty_or_same_correction"),
])
def test_scp_pair_drops(reply, why):
    assert scp_pair("PROMPT", {"text": TRAJ, "sample": 0}, reply) == (None, why)


def test_scp_pair_finds_the_quote_where_it_is_whole_lines():
    text = "Step 1: We know x = 5 is given.\nx = 5\nSelection: [[A]]"
    pair, why = scp_pair("P", {"text": text, "sample": 0},
                         _reply(step="x = 5", prefix="Step 1: We know x = 5 is given.", fix="x = 6"))
    assert why is None and pair["prompt"] == "P\n\nStep 1: We know x = 5 is given." + NEXT_STEP


def test_fap_pairs_never_pair_a_text_with_itself():
    samples = [{"text": "T", "verdict": "correct", "sample": 0}, {"text": "T", "verdict": "wrong", "sample": 1},
               {"text": "U", "verdict": "correct", "sample": 2}, {"text": "W", "verdict": "wrong", "sample": 3},
               {"text": "", "verdict": "wrong", "sample": 4}]
    pairs = fap_pairs("P", samples, max_pairs=4)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("U", "W")]
