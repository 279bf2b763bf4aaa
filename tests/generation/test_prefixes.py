"""Shared prompt starts: which prompts are grouped, and that prefilling a group's start
once (then reading it as a shared prefix, or copying its cache rows) gives the tokens of
prefilling every prompt whole."""
import numpy as np
import pytest
from flax import nnx

from findap_jax.generation.prefixes import prefix_groups, shared_order
from findap_jax.generation import sampler
from findap_jax.generation.sampler import generate_from_ids, generate_ids
from findap_jax.model import Llama, get_preset


def _conversations(seed=0):
    """Two documents with several questions each, and two prompts of their own."""
    rng = np.random.default_rng(seed)
    doc_a, doc_b = list(rng.integers(3, 250, 150)), list(rng.integers(3, 250, 200))
    prompts = [doc_a + list(rng.integers(3, 250, n)) for n in (3, 7, 5, 12)]
    prompts += [doc_b + list(rng.integers(3, 250, n)) for n in (4, 9, 2)]
    prompts += [list(rng.integers(3, 250, 20)), list(rng.integers(3, 250, 41))]
    order = rng.permutation(len(prompts))
    return [[int(t) for t in prompts[i]] for i in order], order


def test_groups_follow_shared_starts():
    prompts, order = _conversations()
    pos = {int(o): i for i, o in enumerate(order)}   # original index -> shuffled index
    groups = prefix_groups(prompts)
    by_rows = {frozenset(rows): n for n, rows in groups}
    assert by_rows[frozenset(pos[i] for i in range(4))] >= 150
    assert by_rows[frozenset(pos[i] for i in range(4, 7))] >= 200
    assert sorted(r for _, rows in groups for r in rows) == list(range(9))   # every row once
    assert all(n <= len(prompts[r]) - 1 for n, rows in groups for r in rows)  # last token unshared
    assert by_rows[frozenset([pos[7]])] == 19
    assert sorted(shared_order(prompts)) == list(range(9))
    # a start shorter than min_shared, or under half of the group's, is not shared
    assert len(prefix_groups([[5] * 10 + [1], [5] * 10 + [2]])) == 2
    assert [len(r) for _, r in prefix_groups([[5] * 40 + [1], [5] * 40 + [2]])] == [2]
    long = [[7] * 100 + [1], [7] * 100 + [2], [7] * 40 + [3] * 61]
    assert sorted(len(r) for _, r in prefix_groups(long)) == [1, 2]


@pytest.fixture(scope="module")
def tiny():
    return Llama(get_preset("tiny"), rngs=nnx.Rngs(5))


@pytest.mark.parametrize("rows_per_start", [1, 100])   # the starts read in place / copied to rows
@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seeds": list(range(9))}])
def test_shared_prefill_gives_the_tokens_of_whole_prefill(tiny, sampling, rows_per_start, monkeypatch):
    monkeypatch.setattr(sampler, "ROWS_PER_SHARED_START", rows_per_start)
    prompts, _ = _conversations(1)
    kw = dict(eos_ids=[-1], pad_id=0, max_new_tokens=12, **sampling)
    shared_stats, whole_stats = {}, {}
    shared = generate_ids(tiny, prompts, stats=shared_stats, **kw)
    whole = generate_ids(tiny, prompts, share_prefixes=False, stats=whole_stats, **kw)
    assert shared == whole
    assert shared_stats["prompt_tokens"] == whole_stats["prompt_tokens"]
    assert shared_stats["prefill_tokens"] < 0.75 * whole_stats["prefill_tokens"]


def test_rows_leave_a_batch_that_reads_shared_starts(tiny, monkeypatch):
    """Compaction keeps each remaining row's start: tokens equal the uncompacted batch."""
    monkeypatch.setattr(sampler, "ROWS_PER_SHARED_START", 1)
    prompts, _ = _conversations(3)
    ends = {i: 1 + 9 * (i % 3) for i in range(len(prompts))}
    kw = dict(eos_ids=[-1], pad_id=0, max_new_tokens=24, should_stop=lambda row, toks: len(toks) >= ends[row])
    widths, keep_rows = [], sampler._keep_rows
    monkeypatch.setattr(sampler, "_keep_rows", lambda tok, *a: widths.append(tok.shape[0]) or keep_rows(tok, *a))
    compacted = generate_ids(tiny, prompts, **kw)
    assert widths and compacted == generate_ids(tiny, prompts, compact=False, share_prefixes=False, **kw)


def test_generate_from_ids_batches_groups_together(tiny):
    prompts, _ = _conversations(2)
    shared, whole = {}, {}
    out = generate_from_ids(tiny, _Tok(), prompts, max_new_tokens=8, batch_size=8, stats=shared)
    assert out == generate_from_ids(tiny, _Tok(), prompts, max_new_tokens=8, batch_size=8,
                                    share_prefixes=False, stats=whole)
    assert shared["prefill_tokens"] < 0.75 * whole["prefill_tokens"]   # (both count padding)


class _Tok:
    """Token ids as text: enough tokenizer for generate_from_ids."""
    eos_ids, pad_id = [-1], 0

    def decode(self, ids):
        return " ".join(map(str, ids))
