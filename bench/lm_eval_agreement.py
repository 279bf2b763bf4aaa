"""SmolLM2-135M-Instruct on the bundled FPB test split: findap-jax log-likelihood multiple
choice vs lm-evaluation-harness (HF backend), every row.

    python bench/lm_eval_agreement.py [--limit N]

Prints per-example agreement of the chosen label, both accuracies, the largest
log-likelihood difference and each side's examples/s (model loading excluded; both
include tokenisation and request building).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from findap_jax import load_pretrained  # noqa: E402
from findap_jax.checkpoints.hub import smollm2_gguf  # noqa: E402
from findap_jax.eval.runner import run_task  # noqa: E402
from findap_jax.eval.tasks import get_task, load_rows, resolve_files  # noqa: E402
from findap_jax.host_malloc import reexec_with_host_malloc  # noqa: E402
from tests.eval.lm_eval_ref import lm_eval_mc  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)
    task = get_task("fpb")
    rows = load_rows(task, limit=args.limit)
    gguf = smollm2_gguf()
    model, tok = load_pretrained(gguf)
    res, recs = run_task(model, tok, task, rows, mode="loglik")
    with tempfile.TemporaryDirectory() as d:
        timing = {}
        ref = lm_eval_mc(gguf, resolve_files(task)[0], Path(d), limit=args.limit or None, timing=timing)
        ref_s = timing["seconds"]
    ours = np.array([r["pred"] for r in recs])
    theirs = np.array([x["pred"] for x in ref])
    diff = np.abs(np.array([r["loglik"] for r in recs]) - np.array([x["lls"] for x in ref])).max()
    print(f"rows {len(rows)}")
    print(f"agreement {np.mean(ours == theirs):.4f} ({int(np.sum(ours != theirs))} differ)")
    print(f"accuracy findap-jax {res['accuracy']:.4f}  lm-eval {np.mean([x['acc'] for x in ref]):.4f}")
    print(f"max |loglik diff| {diff:.2e}")
    print(f"findap-jax {res['examples_per_s']:.2f} ex/s; lm-eval {len(rows) / ref_s:.2f} ex/s")


if __name__ == "__main__":
    main()
