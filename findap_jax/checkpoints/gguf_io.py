"""GGUF (llama.cpp) Llama files -> our parameters, dequantized with the `gguf` package.

llama.cpp's converter permutes the rows of Q and K so its rotary kernel can rotate
adjacent pairs; we undo that to get back HF's rotate-half layout.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from findap_jax.checkpoints.hf import hf_tensors_to_arrays
from findap_jax.checkpoints.params import build_model
from findap_jax.model import Llama, LlamaConfig

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                 "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's HF->GGUF Q/K row permutation (interleaved -> rotate-half)."""
    out, rest = w.shape[0], w.shape[1:]
    return w.reshape(n_heads, out // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def read_gguf_config(reader, path) -> LlamaConfig:
    f = reader.fields

    def get(key, default=None):
        return f[key].contents() if key in f else default

    arch = get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: general.architecture={arch!r} is not supported (only 'llama')")
    p = "llama."
    missing = [k for k in ("block_count", "embedding_length", "feed_forward_length",
                           "attention.head_count") if p + k not in f]
    if missing:
        raise ValueError(f"{path}: missing GGUF metadata {[p + k for k in missing]}")
    heads = int(get(p + "attention.head_count"))
    hidden = int(get(p + "embedding_length"))
    tensor_names = {t.name for t in reader.tensors}
    vocab = get(p + "vocab_size")
    if vocab is None:
        vocab = len(get("tokenizer.ggml.tokens", []))
    scaling = None
    if get(p + "rope.scaling.type") not in (None, "none"):
        raise ValueError(f"{path}: rope scaling {get(p + 'rope.scaling.type')!r} is not supported")
    head_dim = get(p + "rope.dimension_count") or hidden // heads
    eos = get("tokenizer.ggml.eos_token_id")
    return LlamaConfig(
        vocab_size=int(vocab), hidden_size=hidden,
        intermediate_size=int(get(p + "feed_forward_length")),
        num_layers=int(get(p + "block_count")), num_heads=heads,
        num_kv_heads=int(get(p + "attention.head_count_kv", heads)), head_dim=int(head_dim),
        rope_theta=float(get(p + "rope.freq_base", 10000.0)), rope_scaling=scaling,
        rms_norm_eps=float(get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
        tie_word_embeddings="output.weight" not in tensor_names,
        max_position_embeddings=int(get(p + "context_length", 2048)),
        bos_token_id=get("tokenizer.ggml.bos_token_id"),
        eos_token_id=None if eos is None else int(eos))


def load_gguf(path: str | os.PathLike, reader=None, **build_kw) -> Llama:
    import gguf

    path = Path(path)
    reader = reader or gguf.GGUFReader(str(path))
    cfg = read_gguf_config(reader, path)
    tensors = {}
    for t in reader.tensors:
        if t.name in _GLOBAL_NAMES:
            name = _GLOBAL_NAMES[t.name]
        else:
            parts = t.name.split(".")
            if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _LAYER_NAMES:
                if t.name.startswith("rope_"):
                    continue  # rope_freqs: llama.cpp's precomputed scaling table
                raise ValueError(f"{path}: unexpected tensor {t.name}")
            name = f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise ValueError(f"{path}: tensor {t.name} has quantization {t.tensor_type.name}, "
                             f"which gguf cannot dequantize: {e}") from None
        w = np.asarray(w, np.float32).reshape(tuple(int(x) for x in reversed(t.shape)))
        if name.endswith("q_proj.weight"):
            w = unpermute_rotary(w, cfg.num_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rotary(w, cfg.num_kv_heads)
        tensors[name] = (w, f"{path}:{t.name}")
    arrays = hf_tensors_to_arrays(cfg, tensors, str(path))
    return build_model(cfg, arrays, source=str(path), **build_kw)
