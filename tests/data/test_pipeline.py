"""seqio tasks, mixtures, packing and resumable iteration on bundled and synthetic data."""
import collections
import json

import numpy as np
import pytest
import seqio

from findap_jax import defaults
from findap_jax.data.pipeline import build_dataset, make_iterator, register
from findap_jax.data.registry import joint_rates
from findap_jax.data.tasks import register_mixture, task_id
from findap_jax.data.tokenizer import Tokenizer
from tests.helpers import save_tiny_tokenizer

CHATS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is EBITDA?"},
     {"role": "assistant", "content": "Earnings before interest."}, {"role": "user", "content": "And EPS?"},
     {"role": "assistant", "content": "Net income per share."}],
    [{"role": "user", "content": "Bond yields fell?"}, {"role": "assistant", "content": "Prices rose."}],
]


@pytest.fixture(scope="module", params=["chatml", "llama3"])
def tok(request, tmp_path_factory):
    return Tokenizer.from_dir(save_tiny_tokenizer(tmp_path_factory.mktemp(request.param), request.param))


def _cfg(**over):
    cfg = defaults.data_config()
    for k, v in over.items():
        cfg[k] = v
    return cfg


def _rows(ds):
    for batch in ds.as_numpy_iterator():
        for i in range(len(batch["input_tokens"])):
            yield {k: v[i] for k, v in batch.items()}


def test_long_document_is_chunked_without_losing_tokens(tmp_path, tok):
    words = "revenue rose 12% as operating margin widened while bond yields fell".split()
    rng = np.random.default_rng(0)
    text = " ".join(rng.choice(words, 2500))
    ids = tok.encode(text)
    assert len(ids) >= 5000
    (tmp_path / "doc.jsonl").write_text(json.dumps({"text": text}) + "\n")
    cfg = _cfg(seq_len=512, batch_size=1, tasks={"doc": {"kind": "cpt", "train": str(tmp_path / "doc.jsonl")}})
    register(cfg, tok)
    rows = list(_rows(build_dataset(cfg, mixture="findap_doc", num_epochs=1, shuffle=False, shard=(0, 1))))
    assert len(rows) == -(-len(ids) // 510)  # ~10 rows for ~5,000 tokens
    body = []
    for r in rows:
        n = int((r["segment_ids"] > 0).sum())
        assert n <= 512 and r["input_tokens"][0] == tok.bos_id and r["input_tokens"][n - 1] == tok.eos_id
        body += r["input_tokens"][1:n - 1].tolist()
    assert body == ids


def test_packed_rows_segments_positions_and_assistant_only_loss(tmp_path, tok):
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps({"messages": m}) for m in CHATS * 10))
    cfg = _cfg(seq_len=256, batch_size=1, tasks={"chat": {"kind": "chat", "train": str(path)}})
    register(cfg, tok)
    learned, n_rows = [], 0
    for r in _rows(build_dataset(cfg, mixture="findap_chat", num_epochs=1, shuffle=False, shard=(0, 1))):
        n_rows += 1
        seg, pos = r["segment_ids"], r["positions"]
        assert len(seg) == 256
        used = seg > 0
        n_used = int(used.sum())
        assert used[:n_used].all() and np.all(np.diff(seg[:n_used]) >= 0)  # padding only at the end
        for s in np.unique(seg[used]):
            idx = np.flatnonzero(seg == s)
            np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))
            assert r["loss_weights"][idx[-1]] == 0  # nothing predicts across the boundary
            np.testing.assert_array_equal(r["target_tokens"][idx[:-1]], r["input_tokens"][idx[1:]])
        learned += r["target_tokens"][r["loss_weights"] > 0].tolist()
    assert n_rows < 20  # packing put several chats in a row
    end = tok.chat.end_of_turn
    strip = (lambda s: s.strip()) if tok.chat.name == "llama3" else (lambda s: s)
    want = "".join(strip(m["content"]) + end for c in CHATS * 10 for m in c if m["role"] == "assistant")
    assert tok.decode(learned, skip_special_tokens=False) == want


def test_realised_mixture_shares_match_rates(tok):
    cfg = _cfg(seq_len=256, joint={"cpt_rate": 0.5, "cpt_finance_share": 0.5, "it_finance_share": 0.2})
    register(cfg, tok)
    mix = seqio.get_mixture_or_task("findap_joint")
    ds = mix.get_dataset({"targets": 256, "loss_mask": 256}, split="train", shuffle=True, seed=0,
                         num_epochs=None)
    names = {task_id(t.name): t.name for t in mix.tasks}
    counts = collections.Counter(names[int(e["task_id"])] for e in ds.take(2000).as_numpy_iterator())
    for name, rate in joint_rates(0.5, 0.5, 0.2).items():
        assert abs(counts[name] / 2000 - rate) <= 0.03, (name, counts)


def test_downsample_cuts_cpt_to_it_count(tok):
    cfg = _cfg(seq_len=256)
    stats = register(cfg, tok)
    ds = seqio.get_mixture_or_task("findap_joint_downsample").get_dataset(
        {"targets": 256, "loss_mask": 256}, split="train", shuffle=False, num_epochs=1)
    ids = collections.Counter(int(e["task_id"]) for e in ds.as_numpy_iterator())
    n_it = ids[task_id("findap_finance_it")] + ids[task_id("findap_general_it")]
    n_cpt = ids[task_id("findap_finance_cpt")] + ids[task_id("findap_general_cpt")]
    assert n_it > 0 and n_cpt == min(n_it, stats["findap_joint_downsample"].examples - n_it)


def test_resume_continues_with_the_next_batch(tok):
    cfg = _cfg(seq_len=128, batch_size=2)
    register(cfg, tok)
    ref = make_iterator(cfg, shard=(0, 1))
    first = [next(ref) for _ in range(3)]
    state = ref.state()
    expected = [next(ref) for _ in range(3)]
    again = make_iterator(cfg, shard=(0, 1))
    assert [b["input_tokens"].tolist() for b in (next(again) for _ in range(3))] == \
        [b["input_tokens"].tolist() for b in first]
    resumed = make_iterator(cfg, shard=(0, 1))
    resumed.restore(state)
    for a, b in zip(expected, (next(resumed) for _ in range(3))):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_hosts_read_disjoint_shards(tok):
    cfg = _cfg(seq_len=128, batch_size=2, mixture="findap_finance_it")
    register(cfg, tok)
    rows = [list(map(tuple, (r["input_tokens"] for r in _rows(build_dataset(
        cfg, num_epochs=1, shuffle=False, shard=(i, 2)))))) for i in range(2)]
    assert rows[0] and rows[1] and not set(rows[0]) & set(rows[1])


@pytest.mark.parametrize("mixture,seq_len", [("findap_preference", 128), ("findap_general_preference", 512)])
def test_preference_pairs_share_the_prompt(tok, mixture, seq_len):
    cfg = _cfg(seq_len=seq_len, batch_size=2, mixture=mixture)
    register(cfg, tok)
    batch = next(build_dataset(cfg, num_epochs=1, shuffle=False, shard=(0, 1)).as_numpy_iterator())
    for i in range(2):
        c, r = batch["chosen_input_tokens"][i], batch["rejected_input_tokens"][i]
        first_c = np.flatnonzero(batch["chosen_loss_weights"][i])[0]
        first_r = np.flatnonzero(batch["rejected_loss_weights"][i])[0]
        assert first_c == first_r and np.array_equal(c[:first_c + 1], r[:first_r + 1])
        for side in ("chosen", "rejected"):   # the final assistant turn only (HH-RLHF is multi-turn)
            trained = np.flatnonzero(batch[f"{side}_loss_weights"][i])
            assert np.all(np.diff(trained) == 1), (side, trained)
        assert tok.decode(batch["chosen_target_tokens"][i][batch["chosen_loss_weights"][i] > 0],
                          skip_special_tokens=False).endswith(tok.chat.end_of_turn)


def test_a_task_without_examples_is_an_error_naming_its_file(tmp_path, tok):
    empty, text = tmp_path / "empty.jsonl", tmp_path / "text.jsonl"
    empty.write_text("")
    text.write_text(json.dumps({"text": "Revenue rose."}) + "\n")
    tasks = {"empty": {"kind": "cpt", "train": str(empty)}, "text": {"kind": "cpt", "train": str(text)}}
    for rates in ({"empty": 1.0}, {"empty": 1.0, "text": 1.0}):   # alone, and inside a mixture
        cfg = _cfg(seq_len=64, batch_size=2, tasks=tasks, rates=rates, mixture="findap_custom")
        register(cfg, tok)
        with pytest.raises(ValueError, match=r"split 'train' of .*empty\.jsonl.* holds no training example "
                                             r"\(0 records read"):
            next(make_iterator(cfg, shard=(0, 1)))


def test_an_empty_validation_split_is_no_error(tmp_path, tok):
    """Only a train split must hold examples (the dev loss is skipped without any)."""
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "Revenue rose."}) + "\n")
    (tmp_path / "v.jsonl").write_text("")
    cfg = _cfg(seq_len=64, batch_size=2, mixture="findap_t",
               tasks={"t": {"kind": "cpt", "train": str(tmp_path / "t.jsonl"), "validation": str(tmp_path / "v.jsonl")}})
    register(cfg, tok)
    assert list(make_iterator(cfg, "validation", num_epochs=1, shuffle=False, shard=(0, 1), drop_remainder=False)) == []


def test_only_our_own_errors_are_unwrapped_from_tf_data():
    import tensorflow as tf

    from findap_jax.data.pipeline import DataIterator

    def failing(message):
        class Source:
            def as_numpy_iterator(self):
                raise tf.errors.InvalidArgumentError(None, None, message)
                yield
        return DataIterator(lambda: Source())
    with pytest.raises(ValueError, match=r"^split 'train' of x holds no training example$"):
        next(failing("{{function_node f}} ValueError: split 'train' of x holds no training example"))
    with pytest.raises(tf.errors.InvalidArgumentError):   # a bug raised while handling a ValueError
        next(failing("{{function_node f}} TypeError: bug\nTraceback ...\nValueError: invalid literal"))


def test_bad_mixture_configs(tok):
    with pytest.raises(ValueError, match="sum to zero"):
        register_mixture("findap_empty", {"findap_finance_cpt": 0.0})
    with pytest.raises(ValueError, match="has no tasks"):
        register_mixture("findap_empty", {})
    with pytest.raises(ValueError, match="rates must be numbers >= 0"):
        register_mixture("findap_empty", {"findap_finance_cpt": -1.0})
    with pytest.raises(ValueError, match=r"cpt_rate=1\.5"):
        register(_cfg(joint={"cpt_rate": 1.5, "cpt_finance_share": 0.5, "it_finance_share": 0.2}), tok)
