"""Flax NNX Llama, its config and presets."""
from findap_jax.model.config import PRESETS, LlamaConfig, get_preset
from findap_jax.model.llama import REMAT_POLICIES, KVCache, Llama

__all__ = ["PRESETS", "LlamaConfig", "get_preset", "REMAT_POLICIES", "KVCache", "Llama"]
