"""Reports from results.json files: the FinEval capability table (markdown) and a bar
chart comparing runs (PNG)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from findap_jax.eval.tasks import CAPABILITIES, SPLITS
from findap_jax.files import read_json


def read_results(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "results.json"
    try:
        return read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no results.json (is {run_dir} an eval output dir?)") from None


def _fmt(v) -> str:
    return f"{100 * v:.1f}" if isinstance(v, float) else str(v)


def capability_table(results: dict) -> str:
    """Markdown: one block per FinEval axis (similar/novel x capability), each task's primary
    metric in percent with n; axes without a task say so."""
    lines = ["| split | capability | task | metric | score (%) | n | mode |", "|---|---|---|---|---|---|---|"]
    for split in SPLITS:
        for cap in CAPABILITIES:
            rows = [(k, r) for k, r in sorted(results.items())
                    if r.get("split") == split and r.get("capability") == cap]
            if not rows:
                lines.append(f"| {split} | {cap} | — | | | | |")
            for k, r in rows:
                m = r.get("primary", "accuracy")
                lines.append(f"| {split} | {cap} | {k} | {m} | {_fmt(r.get(m))} | {r.get('n')} | {r.get('mode')} |")
    return "\n".join(lines) + "\n"


def compare_chart(run_dirs: Sequence[str | Path], out_png: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Grouped bars: each task's primary metric, one bar per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [read_results(d) for d in run_dirs]
    if labels and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs: give one --label per run")
    labels = list(labels or [Path(d).name or str(d) for d in run_dirs])
    tasks = sorted({t for r in runs for t in r})
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) + 2), 4))
    for i, (res, label) in enumerate(zip(runs, labels)):
        # a task this run did not evaluate gets no bar (NaN), not a 0% one
        vals = [100 * res[t][res[t].get("primary", "accuracy")] if t in res else float("nan") for t in tasks]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, vals, width, label=label)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_ylabel("primary metric (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("FinEval tasks")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
