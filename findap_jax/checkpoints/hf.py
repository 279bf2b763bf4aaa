"""Hugging Face Llama directories (config.json + *.safetensors) <-> our parameters."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import ml_dtypes
import numpy as np

from findap_jax.checkpoints import safetensors_io as st
from findap_jax.checkpoints.params import build_model, host_arrays
from findap_jax.files import read_json
from findap_jax.model import Llama, LlamaConfig

# Buffers some exporters write that carry no learned state.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def layer_tensors(cfg: LlamaConfig):
    """(hf suffix, our path under layers, hf->ours, ours->hf) per decoder-layer tensor.
    Ours: q/k/v [E, heads, D], o [heads, D, E], MLP [in, out]; HF: torch [out, in]."""
    e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    same = (lambda w: w, lambda w: w)
    t = (lambda w: w.T, lambda w: w.T)

    def qkv(n):
        return (lambda w: w.T.reshape(e, n, d), lambda w: w.reshape(e, n * d).T)

    return [
        ("input_layernorm.weight", ("attn_norm", "scale"), *same),
        ("self_attn.q_proj.weight", ("attn", "q_proj"), *qkv(h)),
        ("self_attn.k_proj.weight", ("attn", "k_proj"), *qkv(kv)),
        ("self_attn.v_proj.weight", ("attn", "v_proj"), *qkv(kv)),
        ("self_attn.o_proj.weight", ("attn", "o_proj"),
         lambda w: w.T.reshape(h, d, e), lambda w: w.reshape(h * d, e).T),
        ("post_attention_layernorm.weight", ("mlp_norm", "scale"), *same),
        ("mlp.gate_proj.weight", ("mlp", "gate_proj"), *t),
        ("mlp.up_proj.weight", ("mlp", "up_proj"), *t),
        ("mlp.down_proj.weight", ("mlp", "down_proj"), *t),
    ]


def read_config(path: str | os.PathLike) -> LlamaConfig:
    cfg_path = Path(path) / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: not found; an HF model directory needs config.json")
    try:
        d = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    return LlamaConfig.from_hf(d, source=str(cfg_path))


def _tensor_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise ValueError(f"{index}: no 'weight_map' of tensor names to file names")
        files = sorted({path / f for f in weight_map.values()})
        for f in files:
            if not f.exists():
                raise FileNotFoundError(f"{index}: lists {f.name}, which is missing")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files (only safetensors weights are read)")
    return files


def load_hf(path: str | os.PathLike, **build_kw) -> Llama:
    """Read an HF Llama directory into a model (`build_kw` goes to `build_model`)."""
    path = Path(path)
    cfg = read_config(path)
    tensors: dict[str, tuple[np.ndarray, Path]] = {}
    for f in _tensor_files(path):
        for name, a in st.load_file(f).items():
            if not name.endswith(_IGNORED_SUFFIXES):
                tensors[name] = (a, f)
    arrays = hf_tensors_to_arrays(cfg, tensors, str(path))
    return build_model(cfg, arrays, source=str(path), **build_kw)


_FLOAT_DTYPES = tuple(map(np.dtype, (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)))


def hf_tensors_to_arrays(cfg: LlamaConfig, tensors: dict, source: str) -> dict:
    """{hf name: (array in torch layout, file)} -> pure dict in our layout (consumes `tensors`)."""
    def take(name: str, shape: tuple, convert):
        if name not in tensors:
            raise ValueError(f"{source}: missing tensor {name}")
        a, f = tensors.pop(name)
        if a.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{f}: tensor {name} has dtype {a.dtype}; weights must be floating point")
        if tuple(a.shape) != shape:
            raise ValueError(f"{f}: tensor {name} has shape {tuple(a.shape)}, expected {shape} "
                             f"from the model config")
        return convert(a)

    e, v, n = cfg.hidden_size, cfg.vocab_size, cfg.num_layers
    arrays: dict = {"embed": take("model.embed_tokens.weight", (v, e), np.asarray),
                    "final_norm": {"scale": take("model.norm.weight", (e,), np.asarray)}}
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    else:
        arrays["lm_head"] = take("lm_head.weight", (v, e), lambda w: w.T)
    layers: dict = {}
    for suffix, (mod, leaf), to_ours, to_hf in layer_tensors(cfg):
        hf_shape = tuple(to_hf(np.zeros(_our_shape(cfg, mod, leaf), np.int8)).shape)
        stack = [take(f"model.layers.{i}.{suffix}", hf_shape, to_ours) for i in range(n)]
        layers.setdefault(mod, {})[leaf] = np.stack(stack)
    arrays["layers"] = layers
    if tensors:
        extra = sorted(tensors)[:5]
        raise ValueError(f"{source}: unexpected tensors {extra} (not a plain Llama checkpoint?)")
    return arrays


def _our_shape(cfg: LlamaConfig, mod: str, leaf: str) -> tuple:
    e, h, kv, d, f = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                      cfg.intermediate_size)
    return {("attn_norm", "scale"): (e,), ("mlp_norm", "scale"): (e,),
            ("attn", "q_proj"): (e, h, d), ("attn", "k_proj"): (e, kv, d),
            ("attn", "v_proj"): (e, kv, d), ("attn", "o_proj"): (h, d, e),
            ("mlp", "gate_proj"): (e, f), ("mlp", "up_proj"): (e, f),
            ("mlp", "down_proj"): (f, e)}[(mod, leaf)]


def to_hf_tensors(model: Llama, dtype=None) -> dict[str, np.ndarray]:
    cfg = model.cfg
    p = host_arrays(model)
    cast = (lambda a: a) if dtype is None else (lambda a: a.astype(dtype))
    out = {"model.embed_tokens.weight": cast(p["embed"]),
           "model.norm.weight": cast(p["final_norm"]["scale"])}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = cast(p["lm_head"].T)
    for suffix, (mod, leaf), _, to_hf in layer_tensors(cfg):
        stacked = p["layers"][mod][leaf]
        for i in range(cfg.num_layers):
            out[f"model.layers.{i}.{suffix}"] = cast(np.ascontiguousarray(to_hf(stacked[i])))
    return out


_WEIGHT_FILE = r"model(?:-\d{5}-of-\d{5})?\.safetensors"   # the files save_hf writes


def save_hf(model: Llama, dst: str | os.PathLike, *, tokenizer=None, dtype=None,
            max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write an HF directory transformers can load: config.json, safetensors (sharded
    above `max_shard_bytes`), and the tokenizer files when a tokenizer is given. Weights of
    an earlier export into `dst` (its shards and index) are removed, so none outlive it."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = to_hf_tensors(model, dtype)
    dtype_name = str(next(iter(tensors.values())).dtype)
    hf_cfg = model.cfg.to_hf() | {"torch_dtype": dtype_name}
    shards: list[dict] = [{}]
    size = 0
    for name in sorted(tensors):
        nb = tensors[name].nbytes
        if shards[-1] and size + nb > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nb
    # a previous export's weights would outlive this one: its index is what loaders read first
    stale = [f for f in dst.glob("model*.safetensors") if re.fullmatch(_WEIGHT_FILE, f.name)]
    (dst / "model.safetensors.index.json").unlink(missing_ok=True)
    written = set()
    if len(shards) == 1:
        st.save_file(shards[0], dst / "model.safetensors")
        written.add("model.safetensors")
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            st.save_file(shard, dst / fname)
            written.add(fname)
            weight_map.update({k: fname for k in shard})
        total = sum(a.nbytes for a in tensors.values())
        (dst / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    for f in stale:
        if f.name not in written:
            f.unlink()
    (dst / "config.json").write_text(json.dumps(hf_cfg, indent=2))
    if tokenizer is not None:
        tokenizer.save(dst)
    return dst
