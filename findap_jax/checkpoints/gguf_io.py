"""GGUF (llama.cpp) Llama files -> our parameters, dequantized with the `gguf` package.

llama.cpp's converter permutes the rows of Q and K so its rotary kernel can rotate
adjacent pairs; we undo that to get back HF's rotate-half layout.
"""
from __future__ import annotations

import dataclasses
import os
import struct
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


def _llama3_scaling(table: np.ndarray, theta: float, head_dim: int, where: str) -> dict | None:
    """The "llama3" rope_scaling behind llama.cpp's `rope_freqs` tensor. llama.cpp's converter
    stores Llama-3.1 scaling only as that table: one divisor per rotary frequency (1 for short
    wavelengths, `factor` for long ones, smoothed between) and no scaling metadata. Only the
    ratios original context / low and high wavelength matter, so the published setting
    (low 1, high 4, original context 8192) is tried first, then one fitted to the table;
    either must reproduce every divisor, or the file is refused."""
    from findap_jax.model.layers import rope_inv_freq
    if table.shape != (head_dim // 2,):
        raise ValueError(f"{where}: {table.size} divisors for a head size of {head_dim} "
                         f"(expected {head_dim // 2})")
    if np.allclose(table, 1.0, rtol=1e-6):
        return None
    base = LlamaConfig(vocab_size=1, hidden_size=head_dim, intermediate_size=1, num_layers=1,
                       num_heads=1, num_kv_heads=1, head_dim=head_dim, rope_theta=theta)
    inv = rope_inv_freq(base).astype(np.float64)
    wave = 2 * np.pi / inv
    factor = float(table.max())
    orig = 8192.0
    candidates = [dict(rope_type="llama3", factor=factor, low_freq_factor=1.0, high_freq_factor=4.0,
                       original_max_position_embeddings=int(orig))]
    full = np.isclose(table, factor, rtol=1e-5)
    one = np.isclose(table, 1.0, rtol=1e-5)
    mid = ~full & ~one
    # smooth s = (1 - 1/t) / (1 - 1/factor) = (1/w - 1/L) / (1/H - 1/L) between the high (H) and
    # low (L) wavelength bounds; outside them t is 1 (w < H) or factor (w > L)
    s = (1 / table[mid] - 1 / factor) / (1 - 1 / factor)
    if mid.sum() >= 2:
        a, b = np.polyfit(1 / wave[mid], s, 1)
        inv_low = -b / a
        inv_high = 1 / a + inv_low
    else:
        inv_low = 1 / np.sqrt(wave[~full].max() * wave[full].min()) if full.any() and (~full).any() else 0.5 / wave.max()
        if mid.any():
            inv_high = inv_low + (1 / wave[mid][0] - inv_low) / s[0]
        else:
            inv_high = 1 / np.sqrt(wave[one].max() * wave[~one].min()) if one.any() else 2 / wave.min()
    if inv_high > inv_low > 0:
        candidates.append(dict(rope_type="llama3", factor=factor, low_freq_factor=float(orig * inv_low),
                               high_freq_factor=float(orig * inv_high), original_max_position_embeddings=int(orig)))
    for cand in candidates:
        got = inv / rope_inv_freq(dataclasses.replace(base, rope_scaling=cand)).astype(np.float64)
        if np.allclose(got, table, rtol=1e-4):
            return cand
    raise ValueError(f"{where}: the rope frequency divisors {np.round(table, 4).tolist()} match no "
                     "Llama-3 (\"llama3\") rope scaling; load the model's HF checkpoint instead")


def open_gguf(path: str | os.PathLike):
    """A `gguf.GGUFReader` of `path`; a file that is not a whole GGUF is an error naming it
    (gguf's own errors, e.g. an IndexError for a cut header, do not)."""
    import gguf
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, IndexError, KeyError, OSError, struct.error) as e:
        raise ValueError(f"{path}: not a readable GGUF file (truncated or damaged?): "
                         f"{type(e).__name__}: {e}") from None


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
    if vocab is None and "tokenizer.ggml.tokens" in f:
        vocab = len(get("tokenizer.ggml.tokens"))
    if vocab is None:   # the embedding's rows (gguf lists dimensions innermost first)
        emb = [t for t in reader.tensors if t.name == "token_embd.weight"]
        if not emb:
            raise ValueError(f"{path}: no {p}vocab_size, tokenizer.ggml.tokens or token_embd.weight")
        vocab = int(emb[0].shape[-1])
    if get(p + "rope.scaling.type") not in (None, "none"):
        raise ValueError(f"{path}: rope scaling {get(p + 'rope.scaling.type')!r} is not supported")
    head_dim = get(p + "rope.dimension_count") or hidden // heads
    theta = float(get(p + "rope.freq_base", 10000.0))
    freqs = [t for t in reader.tensors if t.name == "rope_freqs.weight"]
    scaling = _llama3_scaling(np.asarray(freqs[0].data, np.float64).reshape(-1), theta, int(head_dim),
                              f"{path}: tensor rope_freqs.weight") if freqs else None
    eos = get("tokenizer.ggml.eos_token_id")
    return LlamaConfig(
        vocab_size=int(vocab), hidden_size=hidden,
        intermediate_size=int(get(p + "feed_forward_length")),
        num_layers=int(get(p + "block_count")), num_heads=heads,
        num_kv_heads=int(get(p + "attention.head_count_kv", heads)), head_dim=int(head_dim),
        rope_theta=theta, rope_scaling=scaling,
        rms_norm_eps=float(get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
        tie_word_embeddings="output.weight" not in tensor_names,
        max_position_embeddings=int(get(p + "context_length", 2048)),
        bos_token_id=get("tokenizer.ggml.bos_token_id"),
        eos_token_id=None if eos is None else int(eos))


def load_gguf(path: str | os.PathLike, reader=None, **build_kw) -> Llama:
    import gguf

    path = Path(path)
    reader = reader or open_gguf(path)
    cfg = read_gguf_config(reader, path)
    tensors = {}
    for t in reader.tensors:
        if t.name in _GLOBAL_NAMES:
            name = _GLOBAL_NAMES[t.name]
        else:
            parts = t.name.split(".")
            if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _LAYER_NAMES:
                if t.name == "rope_freqs.weight":
                    continue  # read into the config's rope_scaling (_llama3_scaling)
                raise ValueError(f"{path}: unexpected tensor {t.name}")
            name = f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise ValueError(f"{path}: tensor {t.name} has quantization {t.tensor_type.name}, "
                             f"which gguf cannot dequantize: {e}") from None
        shape = tuple(int(x) for x in reversed(t.shape))
        if w.size != int(np.prod(shape)):
            raise ValueError(f"{path}: tensor {t.name}: {w.size} values for shape {shape} (file truncated?)")
        w = np.asarray(w, np.float32).reshape(shape)
        heads = {"q_proj": cfg.num_heads, "k_proj": cfg.num_kv_heads}.get(name.split(".")[-2])
        if heads is not None:
            if w.shape[0] != heads * cfg.head_dim:
                raise ValueError(f"{path}: tensor {t.name} has shape {w.shape}; {heads} heads of "
                                 f"{cfg.head_dim} need {heads * cfg.head_dim} rows")
            w = unpermute_rotary(w, heads)
        tensors[name] = (w, f"{path}:{t.name}")
    arrays = hf_tensors_to_arrays(cfg, tensors, str(path))
    return build_model(cfg, arrays, source=str(path), **build_kw)
