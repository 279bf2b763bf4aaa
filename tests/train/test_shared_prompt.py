"""Prompt-shared preference rows: the layout, and the same log-probs, losses and updates as
the chosen and rejected rows run apart."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from findap_jax.model import Llama, get_preset
from findap_jax.train.shared_prompt import pair_needs, plan_rows, share_prompts, shared_length, worth_sharing
from findap_jax.train.step import pair_logps, pair_sums

from .test_step import _close, run, train_cfg

N = 12


def _row(tokens, prompt, n=N, trained=True):
    """One padded preference row: inputs, next-token targets, weights on the answer."""
    k = len(tokens)
    out = {"input_tokens": np.zeros(n, np.int32), "target_tokens": np.zeros(n, np.int32),
           "loss_weights": np.zeros(n, np.int32), "segment_ids": np.zeros(n, np.int32),
           "positions": np.zeros(n, np.int32)}
    out["input_tokens"][:k] = tokens
    out["target_tokens"][:k - 1] = tokens[1:]
    out["loss_weights"][prompt - 1:k - 1] = int(trained)
    out["segment_ids"][:k] = 1
    out["positions"][:k] = np.arange(k)
    return out


def pairs(seed, specs, vocab=256, n=N):
    """specs: (prompt length, chosen length, rejected length, how), how one of "shared",
    "apart" (different prompts), "same_start" (the answers' first 3 tokens agree too),
    "untrained" (the rejected side has no weights), "identical" (rejected = chosen),
    "prefix" (the shorter row is the start of the longer); None = an all-zero padding pair."""
    rng = np.random.default_rng(seed)
    rows = {"chosen": [], "rejected": []}
    for spec in specs:
        if spec is None:
            for side in rows:
                rows[side].append({k: np.zeros(n, np.int32) for k in _row(np.arange(2), 1, n)})
            continue
        p, nc, nr, how = spec
        prompt = rng.integers(0, vocab, p)
        other = rng.integers(0, vocab, p) if how == "apart" else prompt
        c = np.concatenate([prompt, rng.integers(0, vocab, nc - p)])
        r = np.concatenate([other, rng.integers(0, vocab, nr - p)])
        if how == "same_start":
            r[p:p + 3] = c[p:p + 3]
        elif how == "identical":
            r = c.copy()
        elif how == "prefix":
            r = c[:nr] if nr <= nc else np.concatenate([c, r[nc:]])
        rows["chosen"].append(_row(c, p, n))
        rows["rejected"].append(_row(r, p, n, trained=how != "untrained"))
    return {f"{side}_{k}": np.stack([r[k] for r in rs]) for side, rs in rows.items() for k in rs[0]}


SPECS = [(6, 12, 9, "shared"), (3, 7, 12, "same_start"), (5, 10, 10, "apart"), None]
LONG = [(150, 200, 170, "shared"), (40, 180, 200, "same_start"), (120, 190, 160, "untrained"), None]
EDGE = [(4, 10, 10, "identical"), (3, 11, 7, "prefix"), (5, 8, 12, "prefix"), (2, 9, 6, "shared")]


def test_layout_of_one_pair():
    b = pairs(0, [(4, 7, 6, "shared")])
    s = share_prompts(b, length=10)
    c, r = b["chosen_input_tokens"][0], b["rejected_input_tokens"][0]
    # prompt (4) | chosen answer (3) | rejected answer (2) | padding
    np.testing.assert_array_equal(s["shared_input_tokens"][0], np.concatenate([c[:7], r[4:6], [0]]))
    np.testing.assert_array_equal(s["shared_branch_ids"][0], [0, 0, 0, 0, 1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(s["shared_positions"][0], [0, 1, 2, 3, 4, 5, 6, 4, 5, 0])
    np.testing.assert_array_equal(s["shared_segment_ids"][0], [1] * 9 + [0])
    # the last prompt token (position 3) is trained for both answers' first tokens
    np.testing.assert_array_equal(s["shared_chosen_loss_weights"][0], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(s["shared_rejected_loss_weights"][0], [0, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(s["shared_target_tokens"][0][3:6], c[4:7])
    np.testing.assert_array_equal(s["shared_rejected_target_tokens"][0][[3, 7]], r[4:6])
    assert not any(k.startswith(("chosen_", "rejected_")) for k in s)


def test_answers_that_start_alike_share_their_first_tokens():
    b = pairs(0, [(4, 10, 9, "same_start")])   # the answers' first 3 tokens agree
    assert pair_needs(b) == [10 + 9 - 7]
    s = share_prompts(b, length=12)
    np.testing.assert_array_equal(s["shared_branch_ids"][0], [0] * 7 + [1] * 3 + [2] * 2)
    r = b["rejected_target_tokens"][0]
    np.testing.assert_array_equal(s["shared_rejected_target_tokens"][0][3:7], r[3:7])
    np.testing.assert_array_equal(s["shared_rejected_loss_weights"][0][3:7], [1] * 4)


def test_row_length_rounds_up_and_never_exceeds_two_rows():
    b = pairs(0, SPECS)
    # needs: 12 + 9 - 6, 7 + 12 - 6 (prompt and 3 answer tokens), 10 + 10 - 0 (no common prefix) -> 20
    assert shared_length(b, multiple=7) == 21
    assert shared_length(b, multiple=128) == 2 * N
    assert worth_sharing(b, 21) and not worth_sharing(b, 22)   # 1.75 x 12 = 21
    # packed: rows x length against 1.75 x the 4 pairs' 12 tokens = 84 positions
    assert worth_sharing(b, 24, rows=3) and not worth_sharing(b, 24, rows=4)
    with pytest.raises(ValueError, match="pair 2 needs a shared row of 20 tokens; the row length is 19"):
        share_prompts(b, length=19)


def test_plan_rows_first_fit_longest_first():
    # 9 -> row 0, 7 -> row 1, 5 -> row 1 (full), 4 -> row 2, 3 -> row 0 (full)
    assert plan_rows([5, 9, 3, 7, 4], 12) == [[1, 2], [3, 0], [4]]
    assert plan_rows([5, 9, 3], 12, pack=False) == [[0], [1], [2]]
    assert plan_rows([0, 0, 6], 6) == [[2, 0, 1]]
    with pytest.raises(ValueError, match="pair 1 needs a shared row of 13 tokens; the row length is 12"):
        plan_rows([5, 13], 12)


def test_layout_of_two_pairs_in_one_row():
    b = pairs(0, [(4, 7, 6, "shared"), (2, 5, 4, "shared")])
    b["ref_chosen_logps"] = np.array([-3.0, -5.0], np.float32)
    b["ref_rejected_logps"] = np.array([-4.0, -6.0], np.float32)
    assert pair_needs(b) == [9, 7]   # 7 + 6 - 4 and 5 + 4 - 2
    s = share_prompts(b, 17, plan_rows(pair_needs(b), 17), num_rows=2)
    np.testing.assert_array_equal(s["shared_segment_ids"][0], [1] * 9 + [2] * 7 + [0])
    np.testing.assert_array_equal(s["shared_positions"][0], [0, 1, 2, 3, 4, 5, 6, 4, 5,
                                                             0, 1, 2, 3, 4, 2, 3, 0])
    np.testing.assert_array_equal(s["shared_branch_ids"][0, 9:], [0, 0, 1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(s["shared_rejected_loss_weights"][0, 9:], [0, 1, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(s["shared_pair_mask"], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(s["ref_chosen_logps"], [[-3.0, -5.0], [0, 0]])
    np.testing.assert_array_equal(s["ref_rejected_logps"], [[-4.0, -6.0], [0, 0]])
    assert not s["shared_segment_ids"][1].any()
    with pytest.raises(ValueError, match="pair 1 needs a shared row of 7 tokens; row 0 has 6 of 15 left"):
        share_prompts(b, 15, [[0, 1]])
    with pytest.raises(ValueError, match="rows must hold each of the 2 pairs once"):
        share_prompts(b, 19, [[0]])


def test_packed_rows_are_refused():
    b = pairs(0, SPECS)
    b["chosen_segment_ids"][1, 3:7] = 2
    with pytest.raises(ValueError, match="chosen row 1: .*segment ids 1 then 0"):
        share_prompts(b, 2 * N)


@pytest.mark.parametrize("attention", ["xla", "reference", "dot_product_attention"])
@pytest.mark.parametrize("long", [False, True])
def test_log_probs_equal_separate_rows(attention, long):
    """fp32, tiny random Llama: every trained token's log-prob in a prompt-shared row
    equals its log-prob in its own row within 1e-5: pairs with a shared prompt, answers
    that start alike, different prompts, an untrained side and a padding pair; rows of 12
    and of 200 (several 128-query attention blocks, head chunks of 5 and the default)."""
    model = Llama(get_preset("tiny"), rngs=nnx.Rngs(0), attention=attention)
    tc = train_cfg(head_chunk=256 if long else 5)
    b = pairs(1, LONG, n=200) if long else pairs(1, SPECS)
    s = share_prompts(b, shared_length(b, 8))
    c0, r0 = pair_logps(model, jax.tree.map(jnp.asarray, b), tc)
    c1, r1 = pair_logps(model, jax.tree.map(jnp.asarray, s), tc)
    for side, apart, shared in (("chosen", c0, c1), ("rejected", r0, r1)):
        want = np.asarray(apart)[b[f"{side}_loss_weights"] > 0]
        got = np.asarray(shared)[s[f"shared_{side}_loss_weights"] > 0]
        assert len(want) == len(got) > 0 and np.all(want < 0)
        np.testing.assert_allclose(got, want, atol=1e-5)
    if long:   # (the short batch's pair with different prompts needs both rows whole)
        assert s["shared_input_tokens"].shape[1] < 2 * b["chosen_input_tokens"].shape[1]


@pytest.mark.parametrize("pack", [False, True])
def test_log_probs_equal_separate_rows_when_one_row_starts_the_other(pack):
    """Identical chosen and rejected rows (the whole pair is the shared part) and rows of
    which one is the start of the other (an empty answer branch): every trained token's
    log-prob equals its own row's within 1e-5, one pair per row or packed."""
    model = Llama(get_preset("tiny"), rngs=nnx.Rngs(0))
    tc = train_cfg(head_chunk=5)
    b = pairs(3, EDGE)
    assert pair_needs(b) == [10, 11, 12, 9 + 6 - 2]
    length = shared_length(b, 8)
    s = share_prompts(b, length, plan_rows(pair_needs(b), length, pack))
    if not pack:   # the identical pair is all shared part; a prefix row leaves its branch empty
        branches = [set(s["shared_branch_ids"][r][s["shared_segment_ids"][r] > 0].tolist()) for r in range(3)]
        assert branches == [{0}, {0, 1}, {0, 2}], branches
    c0, r0 = pair_logps(model, jax.tree.map(jnp.asarray, b), tc)
    c1, r1 = pair_logps(model, jax.tree.map(jnp.asarray, s), tc)
    for side, apart, shared in (("chosen", c0, c1), ("rejected", r0, r1)):
        want = np.sort(np.asarray(apart)[b[f"{side}_loss_weights"] > 0])
        got = np.sort(np.asarray(shared)[s[f"shared_{side}_loss_weights"] > 0])
        assert len(want) == len(got) > 0
        np.testing.assert_allclose(got, want, atol=1e-5)
    for side, apart, shared in (("chosen", c0, c1), ("rejected", r0, r1)):
        sums, mask = pair_sums(jax.tree.map(jnp.asarray, s), shared)
        np.testing.assert_allclose(np.sort(np.asarray(sums)[np.asarray(mask) > 0]),
                                   np.sort(np.asarray(apart).sum(-1)), atol=1e-4)


@pytest.mark.parametrize("long", [False, True])
def test_packed_log_probs_equal_separate_rows(long):
    """fp32, tiny random Llama: with several pairs packed into one row (each its own
    segment), every trained token's log-prob equals its log-prob in its own row within
    1e-5, and the per-pair sums come back in (row, slot) order."""
    model = Llama(get_preset("tiny"), rngs=nnx.Rngs(0))
    tc = train_cfg(head_chunk=256 if long else 5)
    b = pairs(2, LONG + LONG[:2], n=200) if long else pairs(2, SPECS + SPECS[:3])
    length = shared_length(b, 8)
    rows = plan_rows(pair_needs(b), length)
    assert len(rows) < len(pair_needs(b)) and max(map(len, rows)) >= 2
    s = share_prompts(b, length, rows)
    c0, r0 = pair_logps(model, jax.tree.map(jnp.asarray, b), tc)
    c1, r1 = pair_logps(model, jax.tree.map(jnp.asarray, s), tc)
    sums, mask = pair_sums(jax.tree.map(jnp.asarray, s), c1)
    slots = len(b["chosen_input_tokens"])
    for side, apart, shared in (("chosen", c0, c1), ("rejected", r0, r1)):
        for r, members in enumerate(rows):
            for k, i in enumerate(members):
                want = np.asarray(apart)[i][b[f"{side}_loss_weights"][i] > 0]
                here = (s["shared_segment_ids"][r] == k + 1) & (s[f"shared_{side}_loss_weights"][r] > 0)
                np.testing.assert_allclose(np.asarray(shared)[r][here], want, atol=1e-5)
                if side == "chosen":
                    assert mask[r * slots + k] == 1
                    np.testing.assert_allclose(sums[r * slots + k], want.sum(), atol=1e-4)
    assert int(np.sum(mask)) == slots


def _shared(b, accum, pack):
    length = shared_length(b, 8)
    rows = plan_rows(pair_needs(b), length, pack)
    return share_prompts(b, length, rows, num_rows=-(-len(rows) // accum) * accum)


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("loss,ref,accum", [("dpo", True, 1), ("rpo", True, 2), ("ipo", False, 1)])
def test_train_steps_equal_separate_rows(loss, ref, accum, pack):
    """Two steps with a live reference (or precomputed reference log-probs), RPO with 2
    accumulated micro-batches, one pair per row or pairs packed into rows (with an empty
    row where the micro-batches need it): the same parameters (<= 1e-5) and metrics as
    the unshared batch (reward accuracy from the second step: in the first the live
    reference equals the policy, margins are rounding)."""
    batches = [pairs(i, SPECS) for i in range(2)]
    if not ref:
        batches = [dict(b, ref_chosen_logps=np.full(4, -30.0, np.float32),
                        ref_rejected_logps=np.full(4, -31.0, np.float32)) for b in batches]
    tc = train_cfg(loss=loss, grad_accum=accum)
    apart, ma = run(tc, batches, ref=ref)
    rows = [_shared(b, accum, pack) for b in batches]
    if pack:   # 4 pairs (one of them padding) in 3 rows, and a 4th, empty row for 2 micro-batches
        assert all(r["shared_input_tokens"].shape[0] == (4 if accum == 2 else 3) for r in rows)
    shared, ms = run(tc, rows, ref=ref)
    _close(apart, shared, 1e-5)
    for i, (a, s) in enumerate(zip(ma, ms)):
        assert set(a) == set(s)
        for k in a:
            if k != "rewards/accuracies" or i or not ref:
                assert abs(a[k] - s[k]) <= 1e-5, (i, k)


def test_splash_refuses_branches():
    model = Llama(get_preset("tiny"), rngs=nnx.Rngs(0), attention="splash")
    ids = jnp.zeros((1, 8), jnp.int32)
    with pytest.raises(ValueError, match="train.shared_prompt=false"):
        model.hidden_states(ids, branch_ids=jnp.zeros((1, 8), jnp.int32))
