"""HF safetensors <-> params: logits parity with transformers, round trip, bad inputs."""
import json

import numpy as np
import pytest

from findap_jax.checkpoints import safetensors_io as st
from findap_jax.checkpoints.hf import load_hf, save_hf
from tests.helpers import TINY_VARIANTS, save_random_hf_llama, torch_logits


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_logits_match_transformers(tmp_path, variant):
    ref = save_random_hf_llama(tmp_path, variant)
    model = load_hf(tmp_path)
    ids = np.random.default_rng(1).integers(0, 97, (2, 40))  # 40 > rope window of llama3 variant
    ours = np.asarray(model(ids))
    theirs = torch_logits(ref, ids)
    assert ours.shape == theirs.shape == (2, 40, 97)
    assert np.abs(ours - theirs).max() <= 1e-4


def test_round_trip_is_bit_identical_and_loads_in_transformers(tmp_path):
    import torch
    from transformers import LlamaForCausalLM

    src, dst = tmp_path / "src", tmp_path / "dst"
    ref = save_random_hf_llama(src, "llama3_rope")
    save_hf(load_hf(src), dst)
    a, b = st.load_file(src / "model.safetensors"), st.load_file(dst / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name
    back = LlamaForCausalLM.from_pretrained(dst).eval()
    ids = np.random.default_rng(2).integers(0, 97, (1, 30))
    np.testing.assert_array_equal(torch_logits(back, ids), torch_logits(ref, ids))
    assert back.config.rope_parameters["rope_type"] == "llama3"
    assert isinstance(back, LlamaForCausalLM) and back.dtype == torch.float32


def test_sharded_export_reloads(tmp_path):
    save_random_hf_llama(tmp_path / "src", "gqa_untied")
    model = load_hf(tmp_path / "src")
    save_hf(model, tmp_path / "dst", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "dst" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = load_hf(tmp_path / "dst")
    ids = np.arange(12)[None]
    np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(again(ids)))


def test_export_over_an_earlier_one_leaves_none_of_its_weights(tmp_path):
    save_random_hf_llama(tmp_path / "a", "gqa_untied")
    save_random_hf_llama(tmp_path / "b", "gqa_untied", seed=1)
    a, b = load_hf(tmp_path / "a"), load_hf(tmp_path / "b")
    ids = np.arange(12)[None]
    save_hf(a, tmp_path / "dst", max_shard_bytes=20_000)            # sharded, with an index
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    save_hf(b, tmp_path / "dst")                                     # one file over it
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    np.testing.assert_array_equal(np.asarray(load_hf(tmp_path / "dst")(ids)), np.asarray(b(ids)))
    save_hf(a, tmp_path / "dst", max_shard_bytes=20_000)            # and sharded again over that
    assert not (tmp_path / "dst" / "model.safetensors").exists()
    np.testing.assert_array_equal(np.asarray(load_hf(tmp_path / "dst")(ids)), np.asarray(a(ids)))


def test_missing_config_json(tmp_path):
    save_random_hf_llama(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_hf(tmp_path)


def test_shape_mismatched_tensor_names_file_and_tensor(tmp_path):
    save_random_hf_llama(tmp_path)
    f = tmp_path / "model.safetensors"
    tensors = {k: np.array(v) for k, v in st.load_file(f).items()}
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((81, 48), np.float32)
    st.save_file(tensors, f)
    with pytest.raises(ValueError, match=r"model\.safetensors.*model\.layers\.1\.mlp\.up_proj\.weight.*\(81, 48\)"):
        load_hf(tmp_path)


def test_truncated_safetensors_names_file_and_tensor(tmp_path):
    save_random_hf_llama(tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match=r"model\.safetensors: truncated.*tensor 'model\."):
        load_hf(tmp_path)


def _rewrite_header(f, mutate):
    import struct
    raw = f.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    blob = json.dumps(mutate(json.loads(raw[8:8 + n]))).encode()
    blob += b" " * (-len(blob) % 8)
    f.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


EMBED = "model.embed_tokens.weight"


@pytest.mark.parametrize("mutate,pattern", [
    (lambda h: [h], r"corrupt safetensors header: a JSON list"),
    (lambda h: {**h, EMBED: "oops"}, rf"tensor '{EMBED}': header entry is not an object"),
    (lambda h: {**h, EMBED: {k: v for k, v in h[EMBED].items() if k != "data_offsets"}},
     rf"tensor '{EMBED}': data_offsets None is not \[begin, end\]"),
    (lambda h: {**h, EMBED: {**h[EMBED], "shape": "97x48"}}, rf"tensor '{EMBED}': shape '97x48' is not"),
])
def test_malformed_safetensors_header_names_file_and_tensor(tmp_path, mutate, pattern):
    save_random_hf_llama(tmp_path)
    _rewrite_header(tmp_path / "model.safetensors", mutate)
    with pytest.raises(ValueError, match=r"model\.safetensors: " + pattern):
        load_hf(tmp_path)


def test_non_float_weights_and_bad_configs_name_their_file(tmp_path):
    save_random_hf_llama(tmp_path)
    f = tmp_path / "model.safetensors"
    tensors = {k: np.array(v) for k, v in st.load_file(f).items()}
    st.save_file({**tensors, EMBED: tensors[EMBED].astype(np.int32)}, f)
    with pytest.raises(ValueError, match=rf"model\.safetensors: tensor {EMBED} has dtype int32; weights must be"):
        load_hf(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for bad, pattern in (({"num_key_value_heads": 3}, "num_heads 4 must be a multiple of num_kv_heads 3"),
                         ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}, "rope_parameters": None},
                          "unsupported rope_scaling type 'yarn'")):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **bad}))
        with pytest.raises(ValueError, match=r"config\.json: " + pattern):
            load_hf(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json: expected a JSON object, got a list"):
        load_hf(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(ValueError, match=r"index\.json: no 'weight_map'"):
        from findap_jax.checkpoints.hf import _tensor_files
        _tensor_files(tmp_path)


def test_a_sliding_window_shorter_than_the_context_is_refused(tmp_path):
    """Mistral-7B-v0.1 attends over its last 4,096 positions only: loading it as full
    attention would give other logits past the window."""
    from transformers import MistralConfig, MistralForCausalLM
    kw = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=1, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128)
    MistralForCausalLM(MistralConfig(sliding_window=4, **kw)).save_pretrained(tmp_path / "sw")
    with pytest.raises(ValueError, match=r"config\.json: sliding_window=4 .* is not supported"):
        load_hf(tmp_path / "sw")
    ref = MistralForCausalLM(MistralConfig(sliding_window=None, **kw)).eval()
    ref.save_pretrained(tmp_path / "full")
    ids = np.arange(12)[None]
    np.testing.assert_allclose(np.asarray(load_hf(tmp_path / "full")(ids)), torch_logits(ref, ids), atol=1e-4)
