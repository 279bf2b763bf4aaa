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
