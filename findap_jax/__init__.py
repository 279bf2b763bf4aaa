"""findap-jax: the FinDAP recipe for domain-adaptive post-training of LLMs in JAX/Flax."""
__version__ = "0.1.0"


def load_pretrained(path, **kwargs):
    """Load `(model, tokenizer)` from an HF directory, a .gguf file or an orbax export."""
    from findap_jax.checkpoints.loader import load_pretrained as _load
    return _load(path, **kwargs)


def generate(model, tokenizer, prompts, **kwargs):
    """Batched text generation with a KV cache; returns one string per prompt."""
    from findap_jax.generation.sampler import generate as _generate
    return _generate(model, tokenizer, prompts, **kwargs)


__all__ = ["load_pretrained", "generate", "__version__"]
