"""Shared test helpers: random tiny HF Llama checkpoints saved by transformers itself."""
from __future__ import annotations

import numpy as np

TINY_VARIANTS = {
    # name: transformers LlamaConfig kwargs
    "gqa_untied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    "mha_tied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    "odd_heads": dict(num_attention_heads=6, num_key_value_heads=3, head_dim=10,
                      tie_word_embeddings=False),
    "llama3_rope": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
                        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                             low_freq_factor=1.0, high_freq_factor=4.0,
                                             original_max_position_embeddings=16)),
}


def save_random_hf_llama(path, variant: str = "gqa_untied", seed: int = 0, vocab: int = 97):
    """Save a random transformers LlamaForCausalLM (fp32) to `path`; returns the torch model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(vocab_size=vocab, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
              max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    kw.update(TINY_VARIANTS[variant])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    with torch.no_grad():  # norms start at 1; perturb so the test sees their layout
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model


def save_tiny_chat_model(path):
    """The tests' standard tiny chat model: random GQA Llama (vocab 300) + ChatML tokenizer."""
    save_random_hf_llama(path, "gqa_untied", vocab=300)
    save_tiny_tokenizer(path, "chatml")
    return path


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(ids)).logits.float().numpy()


# Meta-Llama-3-8B-Instruct's chat template (public tokenizer_config.json), used as the
# Jinja reference that transformers renders.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}")

_CORPUS = [
    "Revenue rose 12% to $3.4 billion as operating margin widened.",
    "The company reported net income of 1,234 million euros for the fiscal year.",
    "Bond yields fell after the central bank held interest rates steady.",
    "EBITDA measures earnings before interest, taxes, depreciation and amortization.",
    "Hello! How can I help you today? What is the capital of France? Paris.",
] * 20


def save_tiny_tokenizer(path, family: str = "chatml", vocab_size: int = 300):
    """A byte-level BPE trained on a few sentences, with the family's special tokens and
    chat template, saved as tokenizer.json + tokenizer_config.json."""
    import json
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if family == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"]
        conf = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                "chat_template": LLAMA3_TEMPLATE}
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        conf = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                "chat_template": CHATML_TEMPLATE}
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_CORPUS, trainer)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tk.save(str(path / "tokenizer.json"))
    conf |= {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False}
    (path / "tokenizer_config.json").write_text(json.dumps(conf))
    return path
