"""A/B one train step of the working tree against a git revision, in one process.

    python bench/ab_commit.py [--against HEAD] [--kind lm|dpo|dpo-pre] [--rounds 4] [--weighted 1.0] [--settle 1]
                                [--dtype float32|bfloat16]

The revision's `findap_jax/` is exported with `git archive` into a temporary folder and
imported as `findap_jax_old` (its absolute imports renamed), so both versions build their
step in the same process and their steps alternate (`timing.interleaved_rounds`): on a
machine whose speed drifts within minutes, only paired rounds compare two commits.
Prints the median s/step of each and the median per-round ratio new/old, with its range
over the rounds and in how many rounds new was faster.
"""
from __future__ import annotations

import argparse
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import train_step
from timing import interleaved_rounds, paired_ratios, ratio_summary

from findap_jax.host_malloc import reexec_with_host_malloc

ROOT = Path(__file__).resolve().parent.parent


def import_revision(rev: str, dest: Path):
    """`findap_jax` at `rev` as the module `findap_jax_old`, from a copy under `dest`."""
    blob = subprocess.run(["git", "archive", rev, "findap_jax"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(blob)).extractall(dest, filter="data")
    pkg = dest / "findap_jax_old"
    (dest / "findap_jax").rename(pkg)
    for f in pkg.rglob("*.py"):
        f.write_text(re.sub(r"\bfindap_jax\b", "findap_jax_old", f.read_text()))
    sys.path.insert(0, str(dest))
    import findap_jax_old.defaults
    import findap_jax_old.model
    import findap_jax_old.train.optim
    import findap_jax_old.train.step
    return findap_jax_old


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="HEAD")
    ap.add_argument("--kind", default="lm", choices=["lm", "dpo", "dpo-pre"])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--weighted", type=float, default=1.0)
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--settle", type=int, default=1, help="untimed steps before each timed one")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    args = ap.parse_args()
    reexec_with_host_malloc()
    from findap_jax.model import get_preset
    new = train_step.ours(get_preset(args.preset), args.kind, 4, 512, args.dtype, weighted=args.weighted)
    new()    # traced and compiled before the module globals below point at the old package
    with tempfile.TemporaryDirectory() as tmp:
        old_pkg = import_revision(args.against, Path(tmp))
        for name, value in dict(Llama=old_pkg.model.Llama, defaults=old_pkg.defaults,
                                make_train_step=old_pkg.train.step.make_train_step,
                                init_state=old_pkg.train.step.init_state,
                                split_model=old_pkg.train.step.split_model,
                                make_optimizer=old_pkg.train.optim.make_optimizer).items():
            setattr(train_step, name, value)
        old = train_step.ours(old_pkg.model.get_preset(args.preset), args.kind, 4, 512, args.dtype, weighted=args.weighted)
        old()
        ts = interleaved_rounds({"old": old, "new": new}, args.rounds, settle=args.settle)
    med = {name: statistics.median(v) for name, v in ts.items()}
    print(f"{args.kind} ({args.dtype}) vs {args.against}: s/step old {med['old']:.2f}, new {med['new']:.2f}; "
          f"per-round new/old {ratio_summary(paired_ratios(ts, 'new', 'old'))}")


if __name__ == "__main__":
    main()
