"""`make demo`: fetch SmolLM2-135M-Instruct and answer a finance question.

(The full FinDAP CPU recipe replaces this once training and evaluation land.)
"""
from __future__ import annotations

import sys

from findap_jax.checkpoints.hub import smollm2_gguf
from findap_jax.cli import main as cli_main

QUESTION = "What does EBITDA measure?"


def main() -> int:
    path = smollm2_gguf()
    print(f"model: {path}\nquestion: {QUESTION}\n", flush=True)
    return cli_main(["generate", "--model", str(path), "--chat", "--prompt", QUESTION,
                     "--max-new-tokens", "160"])


if __name__ == "__main__":
    sys.exit(main())
