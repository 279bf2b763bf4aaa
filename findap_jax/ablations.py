"""One table over several recipe workdirs (the ablation arms of configs/recipes/ablations/):
each arm's last evaluation, its chat check, its training losses and, for preference stages,
where the chosen/rejected log-probabilities went relative to the frozen reference. The
recipe's own report.md compares stages within one run; this compares runs.

    findap-jax ablations runs/ablations/* --out runs/ablations/report.md
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from findap_jax.eval.report import read_results
from findap_jax.files import read_json, read_jsonl, write_text_atomic
from findap_jax.recipe import TRAIN_STAGES as _STAGE1

TRAINED = _STAGE1 + ("rpo",)          # recipe stages that train, in run order
EVAL_ORDER = ("base",) + TRAINED      # eval labels, in run order
# shown beside a task's primary metric: accuracy alone hides a model that says one label
BALANCE_METRICS = ("macro_f1", "mcc")


def read_arm(workdir: str | Path) -> dict:
    """What one recipe workdir holds: evals {label: (results, chat_check)}, train
    {stage: {first, last loss, steps, seconds, preference rewards}}, distill stats."""
    wd = Path(workdir)
    if not wd.is_dir():
        raise FileNotFoundError(f"{wd}: not a directory")
    evals = {}
    for label in EVAL_ORDER:
        done = wd / f".eval_{label}.done"
        if done.exists():
            evals[label] = (read_results(wd / "eval" / label), read_json(done).get("chat_check"))
    train = {}
    for stage in TRAINED:
        done, mpath = wd / f".{stage}.done", wd / stage / "metrics.jsonl"
        if not (done.exists() and mpath.exists()):
            continue
        rows = [r for r in read_jsonl(mpath) if "loss" in r]
        if not rows:
            continue
        info = {"steps": rows[-1]["step"], "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
                "seconds": read_json(done).get("seconds", 0.0)}
        # preference stages: the implicit rewards beta*(logp - logp_ref) of chosen and rejected
        # answers, each against the frozen reference on the same batch (so batch-to-batch
        # variation in answer length cancels), averaged over the last quarter of the steps
        tail = rows[-max(1, len(rows) // 4):]
        for key in ("rewards/chosen", "rewards/rejected"):
            if all(key in r for r in tail):
                info[key] = sum(r[key] for r in tail) / len(tail)
        train[stage] = info
    distill = read_json(wd / ".distill.done").get("stats") if (wd / ".distill.done").exists() else None
    if not evals and not train:
        raise ValueError(f"{wd}: no finished recipe stage (no .<stage>.done files)")
    return {"name": wd.name, "evals": evals, "train": train, "distill": distill}


def _pct(v) -> str:
    return f"{100 * v:.1f}" if isinstance(v, float) and math.isfinite(v) else "—"


def ablation_table(arms: Sequence[dict]) -> str:
    """Markdown: one row per arm (its last eval, `base` if only that), plus a `base` row taken from the first arm
    that evaluated the base model. Columns: each task's primary metric (%) and its macro-F1 /
    MCC where it has them (MCC x 100), chat check, per-stage loss first -> last, and
    preference rewards where a stage had them."""
    rows = []
    base = next((a["evals"]["base"] for a in arms if "base" in a["evals"]), None)
    if base is not None:
        rows.append(("base model", "base", base, {}))
    for a in arms:   # every arm has its row, evaluated or not (its training losses show there)
        done = [label for label in EVAL_ORDER if label in a["evals"]]
        rows.append((a["name"], done[-1], a["evals"][done[-1]], a["train"]) if done
                    else (a["name"], "—", ({}, None), a["train"]))
    tasks = sorted({t for _, _, (res, _), _ in rows for t in res})
    shown = {}   # task -> its primary metric, then the label-balance metrics it has
    for _, _, (res, _), _ in rows:
        for t in tasks:
            if t in res and t not in shown:
                first = res[t].get("primary", "accuracy")
                shown[t] = [first] + [m for m in BALANCE_METRICS if m in res[t] and m != first]
    cols = [(t, m) for t in tasks for m in shown[t]]
    head = ["arm", "evaluated after"] + [f"{t} {m}" for t, m in cols] + [
        "chat replies ending their turn", "training loss first → last",
        "preference reward chosen / rejected (last ¼ of steps)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, label, (res, chat), train in rows:
        cells = [name, label] + [_pct(res[t].get(m)) if t in res else "—" for t, m in cols]
        cells.append(f"{chat['ended']}/{chat['n']}" if chat else "—")
        cells.append("; ".join(f"{s} {i['first_loss']:.3f} → {i['last_loss']:.3f} ({i['steps']} steps)"
                               for s, i in train.items()) or "—")
        pref = [f"{s}: {i['rewards/chosen']:+.3f} / {i['rewards/rejected']:+.3f}"
                for s, i in train.items() if "rewards/chosen" in i and "rewards/rejected" in i]
        cells.append("; ".join(pref) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    ns = {t: next(res[t].get("n") for _, _, (res, _), _ in rows if t in res) for t in tasks}
    lines.append("")
    lines.append("n per task: " + ", ".join(f"{t} {n}" for t, n in ns.items()) + ".")
    return "\n".join(lines) + "\n"


def write_ablation_report(workdirs: Sequence[str | Path], out: str | Path) -> Path:
    """Read every workdir (errors name the workdir), write the markdown table atomically."""
    arms = [read_arm(w) for w in workdirs]
    text = "# Ablation arms\n\n" + ablation_table(arms)
    notes = []
    for a in arms:
        if a["distill"]:
            counts = ", ".join(f"{k} {v}" for k, v in a["distill"].items() if isinstance(v, int))
            notes.append(f"- {a['name']}: distillation {counts}")
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return write_text_atomic(out, text)
