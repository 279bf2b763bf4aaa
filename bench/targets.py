"""The performance targets, met or not, from one results file of the bench scripts.

    python bench/targets.py bench-results.jsonl      # `make bench` writes it and ends with this

Each bench script run with `--json FILE` appends its figures to FILE (bench/results.py).
This sets them against the performance issue's targets (SmolLM2-135M shapes, sequence 512,
batch 4, AdamW; ratios between stacks measured in one process) and prints a markdown
table: one row per measurement that bears on a target, with the figures, the ratio and
whether it meets the target. A target no record bears on says "not measured": the table
never carries a number from elsewhere.
"""
from __future__ import annotations

import argparse
import functools
import statistics

from results import load_records  # bench/results.py (the script's folder is on sys.path)

OURS, TORCH = "findap-jax", "transformers"
SHAPES = {"preset": "smollm2-135m", "seq": 512, "batch": 4}
# the settings the other targets name: decoding a 64-token prompt to 128 new tokens,
# the pipeline of the joint CPT+IT mixture
SETTINGS = {"decode": {"prompt": 64, "new": 128}, "data_pipeline": {"mixture": "findap_joint"}}


def at_shapes(records, shapes=None) -> list[dict]:
    """The records to judge: those run at the targets' settings, the train steps (ours and
    Tunix's) at the targets' model, sequence and batch (`shapes` overrides SHAPES), ours
    training on every position as the peers do."""
    shapes = shapes or SHAPES
    want = dict(SETTINGS, train_step=dict(shapes, weighted=1.0), tunix_peer=shapes)
    return [r for r in records if all(r["args"].get(k) == v for k, v in want.get(r["script"], {}).items())
            and not r["args"].get("tiny")]


def _train_runs(records, dtype=None):
    """train_step records with fp32 master weights, optionally of one compute dtype."""
    return [r for r in records if r["script"] == "train_step"
            and r["args"].get("param_dtype", "float32") == "float32"
            and (dtype is None or r["args"].get("dtype") == dtype)]


def _run_name(rec) -> str:
    a = rec["args"]
    extra = f", prompt {a['prompt']:g}" if a.get("prompt") else ""
    return f"train_step {a.get('dtype', 'float32')}{extra}"


def _ratio(r: float, per_round: float | None) -> str:
    """The ratio of the medians, with the median of the per-round ratios where recorded."""
    return f"{r:.2f}" + (f" (per round {per_round:.2f})" if per_round else "")


def _per_round(rec, kind) -> float | None:
    ratios = rec["figures"].get("per_round", {}).get(kind)
    return statistics.median(ratios) if ratios else None


def _row(target, run, ours, peer, ratio, status):
    return {"target": target, "run": run, "ours": ours, "peer": peer, "ratio": ratio, "status": status}


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def vs_transformers(records, t, kind, goal):
    """Ours against the transformers step of `kind` (lm: SFT/CPT, dpo: TRL-style DPO) in
    each fp32 train_step run, met at `goal` times its tokens/s."""
    for rec in _train_runs(records, "float32"):
        st = rec["figures"]["steps"].get(kind, {})
        if OURS in st and TORCH in st:
            r = st[OURS]["tokens_per_s"] / st[TORCH]["tokens_per_s"]
            yield _row(t, _run_name(rec), f"{st[OURS]['tokens_per_s']:.1f}", f"{st[TORCH]['tokens_per_s']:.1f}",
                       _ratio(r, _per_round(rec, kind)), _met(r >= goal))


def vs_tunix(records, t, kind, goal=None):
    """Ours against Tunix's trainer step of `kind` (lm: SFT/CPT, dpo), met at `goal` (None:
    reported only)."""
    for rec in records:
        st = rec["figures"].get("steps", {}).get(kind, {}) if rec["script"] == "tunix_peer" else {}
        if OURS in st and "tunix" in st:
            r = st[OURS]["tokens_per_s"] / st["tunix"]["tokens_per_s"]
            pr = rec["figures"].get("per_round_median", {}).get(kind)
            yield _row(t, "tunix_peer", f"{st[OURS]['tokens_per_s']:.1f}", f"{st['tunix']['tokens_per_s']:.1f}",
                       _ratio(r, pr), "reported" if goal is None else _met(r >= goal))


def _per_sequence(steps, kind, name):
    """A DPO-style step's time per sequence over the SFT step's (2 sequences per pair)."""
    return steps[kind][name]["s_per_step"] / steps["lm"][name]["s_per_step"] / 2


def dpo_over_sft(records, t, kind, limit=None):
    """A DPO-style step (`kind`: dpo, dpo-pre, rpo) per sequence over the SFT step of the
    same run, met at or under `limit` (None: reported only)."""
    for rec in _train_runs(records, "float32"):
        st = rec["figures"]["steps"]
        if OURS in st.get(kind, {}) and OURS in st.get("lm", {}):
            ours = _per_sequence(st, kind, OURS)
            peer = f"{_per_sequence(st, kind, TORCH):.2f}" if TORCH in st[kind] and TORCH in st["lm"] else "-"
            yield _row(t, _run_name(rec), f"{ours:.2f}", peer, "", "reported" if limit is None else _met(ours <= limit))


def dpo_vs_trl(records, t):
    """The DPO target on the train-step runs' random pairs and on the bundled real pairs."""
    yield from vs_transformers(records, t, "dpo", 1.5)
    for rec in records:
        tps = rec["figures"].get("tokens_per_s", {}) if rec["script"] == "dpo_real_pairs" else {}
        if OURS in tps and TORCH in tps:
            r = tps[OURS] / tps[TORCH]
            pr = rec["figures"].get("per_round")
            yield _row(t, f"dpo_real_pairs {rec['args'].get('dtype', 'float32')}", f"{tps[OURS]:.1f}",
                       f"{tps[TORCH]:.1f}", _ratio(r, statistics.median(pr) if pr else None), _met(r >= 1.5))


def bf16_best_vs_best(records, t):
    """The faster of each stack's fp32 and bf16-compute SFT steps: reported, no target."""
    top, dtypes = {}, set()   # stack -> (best tokens/s, its compute dtype)
    for rec in _train_runs(records):
        dtype = rec["args"].get("dtype")
        for name, fig in rec["figures"]["steps"].get("lm", {}).items():
            dtypes.add(dtype)
            top[name] = max(top.get(name, (0.0, dtype)), (fig["tokens_per_s"], dtype))
    if "bfloat16" in dtypes and OURS in top and TORCH in top:
        (o, od), (p, pd) = top[OURS], top[TORCH]
        yield _row(t, "train_step float32 and bfloat16",
                   f"{o:.1f} ({od})", f"{p:.1f} ({pd})", f"{o / p:.2f}", "reported")


def decode(records, t):
    for rec in records:
        if rec["script"] != "decode":
            continue
        for b, figs in rec["figures"]["batches"].items():
            if OURS in figs and TORCH in figs:
                o, p = figs[OURS], figs[TORCH]
                r = o["tokens_per_s"] / p["tokens_per_s"]
                yield _row(t, f"decode, batch {b}",
                           f"{o['tokens_per_s']:.1f} (TTFT {o['ttft_s'] * 1e3:.0f} ms)",
                           f"{p['tokens_per_s']:.1f} (TTFT {p['ttft_s'] * 1e3:.0f} ms)", f"{r:.2f}",
                           _met(r >= 2.0 and o["ttft_s"] <= p["ttft_s"]))


def input_pipeline(records, t):
    """The pipeline's tokens/s over the fastest SFT step's in the file: the harder test."""
    rates = [rec["figures"]["steps"]["lm"][OURS]["tokens_per_s"] for rec in _train_runs(records)
             if OURS in rec["figures"]["steps"].get("lm", {})]
    for rec in records:
        if rec["script"] == "data_pipeline" and rates:
            r = rec["figures"]["tokens_per_s"] / max(rates)
            yield _row(t, f"data_pipeline {rec['args'].get('mixture', '')}",
                       f"{rec['figures']['tokens_per_s']:,.0f}", f"{max(rates):.1f} (trainer)", f"{r:,.0f}",
                       _met(r >= 10))


def preset_1b(records, t):
    """The ~1B preset's train steps as run (bf16 on CPU, where its fp32 state does not fit
    24 GB): tokens/s and MFU, no peer target. Reads every record, not only the targets' shapes."""
    for rec in records:
        a = rec["args"]
        if rec["script"] != "train_step" or a.get("preset") != "llama3.2-1b":
            continue
        for kind, figs in rec["figures"]["steps"].items():
            if OURS in figs and "mfu" in figs[OURS]:
                o = figs[OURS]
                yield _row(t, f"{kind}, batch {a['batch']} x {a['seq']}, {a['dtype']} / {a['param_dtype']} weights",
                           f"{o['tokens_per_s']:.1f} tokens/s, MFU {o['mfu']:.2f}", "", "", "reported")


def accelerator_mfu(records, t):
    for rec in records:
        if rec["script"] != "accelerator_mfu":
            continue
        for run in rec["figures"]["runs"]:
            mfu = run.get("mfu_published_peak")
            if mfu is None:     # a CPU or a chip without a published peak: no target applies
                continue
            yield _row(t, f"{run['preset']} on {run['device']}", f"{mfu:.3f}", "", "", _met(mfu >= 0.5))


TARGETS = [
    ("SFT/CPT tokens/s >= 1.2x transformers (fp32)", functools.partial(vs_transformers, kind="lm", goal=1.2)),
    ("SFT/CPT tokens/s >= 2x Tunix (fp32)", functools.partial(vs_tunix, kind="lm", goal=2.0)),
    ("DPO tokens/s vs Tunix's DPOTrainer, live reference (no target)", functools.partial(vs_tunix, kind="dpo")),
    ("DPO tokens/s >= 1.5x transformers + TRL-style DPO (live reference)", dpo_vs_trl),
    ("DPO / SFT time per sequence, live reference <= 1.35", functools.partial(dpo_over_sft, kind="dpo", limit=1.35)),
    ("DPO / SFT time per sequence, precomputed reference <= 1.05",
     functools.partial(dpo_over_sft, kind="dpo-pre", limit=1.05)),
    ("RPO / SFT time per sequence (no target)", functools.partial(dpo_over_sft, kind="rpo")),
    ("bf16 compute: best vs best (no target)", bf16_best_vs_best),
    ("greedy decode tokens/s >= 2x transformers generate, TTFT no worse", decode),
    ("input pipeline tokens/s >= 10x the trainer's", input_pipeline),
    ("MFU >= 50% on an H100-class accelerator (1B preset, Llama-3-8B layers)", accelerator_mfu),
]
# targets judged on every record, whatever its shapes
ALL_SHAPES = [("train step of the ~1B preset on this CPU (no target)", preset_1b)]


def target_rows(records, shapes=None) -> list[dict]:
    """Every row of the table: the measured ones, and one "not measured" row per target
    that no record bears on. `shapes` overrides SHAPES (the tests judge tiny runs)."""
    rows = []
    for targets, recs in ((TARGETS, at_shapes(records, shapes)), (ALL_SHAPES, records)):
        for target, fn in targets:
            rows += list(fn(recs, target)) or [_row(target, "", "", "", "", "not measured")]
    return rows


def markdown(rows) -> str:
    cols = ["target", "run", "ours", "peer", "ratio", "status"]
    head = ["target", "run", "findap-jax", "peer", "ratio (per round)", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="the JSON-lines file the bench scripts' --json appended to")
    ap.add_argument("--preset", default=SHAPES["preset"], help="judge train steps of this preset")
    ap.add_argument("--seq", type=int, default=SHAPES["seq"])
    ap.add_argument("--batch", type=int, default=SHAPES["batch"])
    args = ap.parse_args(argv)
    records = load_records(args.results)
    cpus = sorted({r.get("cpu", "?") for r in records})
    times = [r["time"] for r in records if "time" in r]
    print(f"{len(records)} bench records" + (f", {times[0]} to {times[-1]}" if times else ""))
    for cpu in cpus:
        print(cpu)
    print(markdown(target_rows(records, {"preset": args.preset, "seq": args.seq, "batch": args.batch})))


if __name__ == "__main__":
    main()
