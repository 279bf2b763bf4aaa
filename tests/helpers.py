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


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(ids)).logits.float().numpy()
