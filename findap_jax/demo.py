"""`make demo`: the FinDAP recipe at CPU scale on SmolLM2-135M-Instruct, end to end.

Runs configs/recipes/findap_smollm2_cpu.py into runs/demo (FINDAP_DEMO_WORKDIR overrides;
extra arguments are passed on as config overrides, e.g. --config.cpt_it.train.steps=4) and
prints the report. Rerunning resumes and skips finished stages; delete the folder to start
over.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from findap_jax.cli import main as cli_main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "findap_smollm2_cpu.py"


def main(argv=None) -> int:
    workdir = os.environ.get("FINDAP_DEMO_WORKDIR", "runs/demo")
    args = ["recipe", f"--config={CONFIG}", "--workdir", workdir] + list(sys.argv[1:] if argv is None else argv)
    print("findap-jax " + " ".join(args), flush=True)
    rc = cli_main(args)
    report = Path(workdir) / "report.md"
    if rc == 0 and report.exists():
        print("\n" + report.read_text())
    return rc


if __name__ == "__main__":
    from findap_jax.host_malloc import reexec_with_host_malloc

    reexec_with_host_malloc()   # see findap_jax/host_malloc.py
    sys.exit(main())
