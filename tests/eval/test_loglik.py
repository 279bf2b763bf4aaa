"""Packed log-likelihood scoring vs a plain forward pass; sharding and generation agreement."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from findap_jax.data.tokenizer import Tokenizer
from findap_jax.eval.loglik import encode_pair, plan, score
from findap_jax.eval.runner import run_task
from findap_jax.eval.tasks import EvalTask
from findap_jax.generation.sampler import generate
from findap_jax.model import Llama, get_preset
from findap_jax.parallel import make_mesh
from findap_jax.parallel.sharding import shard_module
from tests.helpers import save_tiny_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = Tokenizer.from_dir(save_tiny_tokenizer(tmp_path_factory.mktemp("tok")))
    cfg = get_preset("tiny").replace(vocab_size=tok.vocab_size)
    return Llama(cfg, rngs=nnx.Rngs(5)), tok


_forward = nnx.jit(lambda m, x: m(x))


def _direct(model, ctx, cont):
    """Sum of log p(cont | ctx) from one unpacked forward pass over ctx + cont (right-padded
    to 64 tokens so one compiled shape serves every request; causal, so padding is inert)."""
    seq = list(ctx) + list(cont)
    ids = np.zeros((1, 64), np.int32)
    ids[0, :len(seq)] = seq
    logp = np.asarray(jax.nn.log_softmax(_forward(model, jnp.asarray(ids))[0], -1))
    return float(sum(logp[len(ctx) - 1 + t, tok] for t, tok in enumerate(cont)))


def _requests(seed=0, n=13):
    rng = np.random.default_rng(seed)
    reqs = []
    for i in range(n):
        ctx = rng.integers(3, 250, rng.integers(2, 40)).tolist()
        for _ in range(rng.integers(1, 4)):                 # several continuations per context
            reqs.append((ctx, rng.integers(3, 250, rng.integers(1, 5)).tolist()))
    reqs.append((reqs[0][0], reqs[0][1][:1]))              # a prefix of another request
    return reqs


def test_packed_scores_equal_unpacked(tiny):
    model, _ = tiny
    reqs = _requests()
    got, stats = score(model, reqs, row_len=64, rows_per_batch=2)
    assert stats["rows"] < len(reqs) and stats["truncated"] == 0
    for (ctx, cont), s in zip(reqs, got):
        assert s.n_tokens == len(cont)
        assert s.logprob == pytest.approx(_direct(model, ctx, cont), abs=1e-4)


def test_single_token_choices_share_one_sequence():
    ctx = [1, 2, 3, 4]
    pl, _ = plan([(ctx, [7]), (ctx, [8]), (ctx, [9]), (ctx, [7, 8])], row_len=64, max_len=64)
    assert [len(s) for row in pl.rows for s, _ in row] == [5]     # ctx + [7] covers all four
    assert sorted(p for p, _, _ in pl.queries[0]) == [3, 3, 3, 3, 4]


def test_left_truncation_to_max_len(tiny):
    model, _ = tiny
    ctx, cont = list(range(3, 43)), [5, 6]
    (s,), stats = score(model, [(ctx, cont)], max_len=16)
    assert stats["truncated"] == 1
    assert s.logprob == pytest.approx(_direct(model, ctx[-15:], cont), abs=1e-4)
    with pytest.raises(ValueError, match="leaves no room"):
        score(model, [(ctx, list(range(3, 20)))], max_len=16)


def test_sharded_scores_equal_single_device(tiny):
    model, _ = tiny
    reqs = _requests(seed=1)
    ref, _ = score(model, reqs, row_len=64, rows_per_batch=3)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = Llama(model.cfg, rngs=nnx.Rngs(0))
    nnx.update(sharded, nnx.state(model))
    shard_module(sharded, mesh)
    got, _ = score(sharded, reqs, row_len=64, rows_per_batch=3, mesh=mesh)
    np.testing.assert_allclose([g.logprob for g in got], [r.logprob for r in ref], atol=1e-4)


def test_encode_pair_moves_trailing_space(tiny):
    _, tok = tiny
    ctx, cont = encode_pair(tok, "the bank rose ", "sharply")
    assert tok.decode(ctx) == "the bank rose" and tok.decode(cont) == " sharply"
    with pytest.raises(ValueError, match="empty continuation"):
        encode_pair(tok, "the bank", "")


def test_greedy_generation_picks_the_top_single_token_candidate(tiny):
    """With single-token candidates that include the greedy next token, log-likelihood
    scoring must choose it, and generation mode must extract the same label."""
    _, tok = tiny
    # untied head: a tied random model echoes its last input token (the template's newline)
    model = Llama(get_preset("tiny").replace(vocab_size=tok.vocab_size, tie_word_embeddings=False),
                  rngs=nnx.Rngs(0))
    task = EvalTask(name="t", files=("x",), answer_type="label", split="similar", capability="tasks")
    words = ["the", "market", "bond", "yields", "net", "income", "bank", "shares", "rose", "fell"]
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(words, 4)) for _ in range(40)]
    firsts = generate(model, tok, queries, max_new_tokens=1, chat=True)
    rows = []
    for q, first in zip(queries, firsts):
        # keep prompts whose greedy token is a word (a whitespace token would merge with
        # the template's trailing newline when scored as a continuation)
        if not first.isalnum() or len(tok.encode(first)) != 1:
            continue
        others = [w for w in ("zz", "qq", "q", "z", "x", "v") if len(tok.encode(w)) == 1 and w != first][:2]
        rows.append({"id": str(len(rows)), "query": q, "choices": [others[0], first, others[1]],
                     "gold": 1, "answer": first, "_where": f"row{len(rows)}"})
    assert len(rows) >= 3
    res_ll, recs = run_task(model, tok, task, rows, mode="loglik")
    # (the template's trailing newline is scored with each choice, as lm-eval does: a term
    # common to all choices, so the argmax is the greedy token)
    assert res_ll["accuracy"] == 1.0
    res_gen, _ = run_task(model, tok, task, rows, mode="generate", max_new_tokens=1)
    assert res_gen["accuracy"] == 1.0
