"""Weights in and out: HF safetensors, GGUF, orbax exports."""
from findap_jax.checkpoints.loader import load_pretrained, save_pretrained

__all__ = ["load_pretrained", "save_pretrained"]
