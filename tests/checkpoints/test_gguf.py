"""GGUF import of the real SmolLM2-135M-Instruct against transformers loading the same file."""
import numpy as np
import pytest

from findap_jax.checkpoints.gguf_io import load_gguf, unpermute_rotary

PROMPTS = [
    "Revenue rose 12.5% to $3,401 million in fiscal 2023, while operating margin widened.",
    "What does EBITDA measure?",
    "  The Fed held rates at 5.25%\n\nBond yields fell; equities rallied!! ",
    "Net income per share: 1,234.56 EUR (diluted).",
]


@pytest.fixture(scope="module")
def hf_gguf(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=smollm2_path.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path.parent, dtype=torch.float32, **kw)
    return model.eval(), AutoTokenizer.from_pretrained(smollm2_path.parent, **kw)


@pytest.mark.slow
def test_logits_match_transformers_gguf(smollm2, hf_gguf):
    import torch

    model, tok = smollm2
    ref, _ = hf_gguf
    for text in PROMPTS:
        ids = np.asarray([tok.encode(text)])
        with torch.no_grad():
            theirs = ref(torch.as_tensor(ids)).logits.numpy()
        ours = np.asarray(model(ids))
        assert np.abs(ours - theirs).max() <= 1e-3, text


@pytest.mark.slow
def test_tokenizer_and_chat_template_match_transformers(smollm2, hf_gguf):
    _, tok = smollm2
    _, ref = hf_gguf
    for text in PROMPTS:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False)
        assert tok.decode(tok.encode(text)) == text
    msgs = [{"role": "user", "content": "What does EBITDA measure?"}]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True) == ref.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True)
    assert tok.eos_ids == (ref.eos_token_id,)


def _llamacpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf's Q/K permutation (HF rotate-half -> interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llamacpp_permutation():
    w = np.random.default_rng(0).normal(size=(3 * 8, 5))
    np.testing.assert_array_equal(unpermute_rotary(_llamacpp_permute(w, 3), 3), w)


def test_unknown_architecture_is_a_clear_error(tmp_path):
    import gguf

    path = tmp_path / "falcon.gguf"
    writer = gguf.GGUFWriter(str(path), "falcon")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"falcon\.gguf: general\.architecture='falcon' is not supported"):
        load_gguf(path)


_GGUF_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def _write_gguf_like_llamacpp(model, path, rope_freqs=None):
    """A tiny transformers Llama written as llama.cpp's converter would: its tensor names, Q/K
    rows permuted, and Llama-3 rope scaling only as the `rope_freqs` divisor table."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_context_length(c.max_position_embeddings)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_vocab_size(c.vocab_size)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    for name, p in model.state_dict().items():
        a = p.float().numpy()
        if name == "model.embed_tokens.weight":
            w.add_tensor("token_embd.weight", a)
        elif name == "model.norm.weight":
            w.add_tensor("output_norm.weight", a)
        elif name == "lm_head.weight":
            w.add_tensor("output.weight", a)
        elif name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            module = rest.removesuffix(".weight")
            if module == "self_attn.q_proj":
                a = _llamacpp_permute(a, c.num_attention_heads)
            elif module == "self_attn.k_proj":
                a = _llamacpp_permute(a, c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{_GGUF_LAYER[module]}.weight", np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_llama3_rope_scaling_from_rope_freqs_matches_transformers(tmp_path):
    """Llama-3.1/3.2 GGUFs carry rope scaling only in `rope_freqs.weight`: the divisors of
    the base frequencies. Computed here from transformers' own scaled frequencies."""
    from tests.helpers import save_random_hf_llama, torch_logits

    ref = save_random_hf_llama(tmp_path / "hf", "llama3_rope")
    d, theta = ref.config.head_dim, ref.config.rope_parameters["rope_theta"]
    base = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    divisors = base / ref.model.rotary_emb.inv_freq.double().numpy()
    assert divisors.max() > 1.5                       # the variant's scaling is in play
    ids = np.arange(40)[None] % 97
    model = load_gguf(_write_gguf_like_llamacpp(ref, tmp_path / "scaled.gguf", divisors))
    assert model.cfg.rope_scaling["factor"] == pytest.approx(8.0)
    np.testing.assert_allclose(np.asarray(model(ids)), torch_logits(ref, ids), atol=1e-4)
    plain = load_gguf(_write_gguf_like_llamacpp(ref, tmp_path / "plain.gguf"))   # the old behaviour
    assert plain.cfg.rope_scaling is None
    assert np.abs(np.asarray(plain(ids)) - torch_logits(ref, ids)).max() > 1e-3
    with pytest.raises(ValueError, match=r"bad\.gguf: tensor rope_freqs\.weight: the rope frequency divisors"):
        load_gguf(_write_gguf_like_llamacpp(ref, tmp_path / "bad.gguf", np.linspace(1, 8, d // 2)))


def test_damaged_gguf_files_are_errors_naming_the_file(tmp_path):
    from findap_jax.checkpoints.loader import load_pretrained
    from findap_jax.data.tokenizer import Tokenizer
    from tests.helpers import save_random_hf_llama

    good = _write_gguf_like_llamacpp(save_random_hf_llama(tmp_path / "hf", "gqa_untied"), tmp_path / "good.gguf")
    assert load_gguf(good).cfg.vocab_size == 97            # from llama.vocab_size
    data = good.read_bytes()
    for name, cut in (("tail.gguf", data[:-500]), ("head.gguf", data[:200]), ("text.gguf", b"not a gguf" * 20)):
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}: not a readable GGUF file"):
            load_pretrained(tmp_path / name)
    with pytest.raises(ValueError, match=r"good\.gguf: GGUF metadata tokenizer\.ggml\.model is missing"):
        Tokenizer.from_gguf(good)
