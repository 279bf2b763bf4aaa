"""The FinDAP tasks and mixtures, registered in seqio for a given tokenizer and length.

Tasks (bundled files by default; any can point at the user's FinTrain downloads):
  findap_finance_cpt, findap_general_cpt   CPT text
  findap_finance_it,  findap_general_it    chat instructions (finance_it has a validation split)
  findap_preference                        finance preference pairs (written here)
  findap_general_preference                general preference pairs (HH-RLHF harmless-base)
Mixtures:
  findap_joint       FinDAP's CPT+IT rate mixture: CPT:IT and finance:general within each
  findap_joint_downsample   CPT examples cut to the IT example count (FinDAP's public code)
  findap_cpt, findap_it     CPT only / IT only, with the same finance:general shares
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import seqio
import tensorflow as tf

from findap_jax.data.tasks import (SIGNATURES, TaskSpec, TaskStats, add_task, iter_examples,
                                   output_features, register_mixture, register_task, task_id)

BUNDLED = Path(__file__).parent / "bundled"
PREFIX = "findap_"


def default_specs(root: str | Path = BUNDLED) -> dict[str, TaskSpec]:
    r = Path(root)
    return {
        "finance_cpt": TaskSpec("cpt", {"train": str(r / "finance_cpt" / "*.jsonl")}),
        "general_cpt": TaskSpec("cpt", {"train": str(r / "general_cpt" / "*.jsonl")}),
        # FPB train, tweets train, the FIN5 training side, FinQA train and written Q&A;
        # FPB dev is the validation split
        "finance_it": TaskSpec("chat", {"train": [str(r / "fpb" / "train.jsonl"),
                                                  str(r / "finance_it" / "*.jsonl")],
                                        "validation": str(r / "fpb" / "dev.jsonl")}),
        "general_it": TaskSpec("chat", {"train": str(r / "general_it" / "*.jsonl")}),
        "preference": TaskSpec("preference", {"train": str(r / "preference" / "*.jsonl")}),
        "general_preference": TaskSpec("preference", {"train": str(r / "general_preference" / "*.jsonl")}),
    }


def joint_rates(cpt_rate: float, cpt_finance_share: float, it_finance_share: float) -> dict[str, float]:
    for name, v in (("cpt_rate", cpt_rate), ("cpt_finance_share", cpt_finance_share),
                    ("it_finance_share", it_finance_share)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"joint mixture: {name}={v} must be within [0, 1]")
    return {f"{PREFIX}finance_cpt": cpt_rate * cpt_finance_share,
            f"{PREFIX}general_cpt": cpt_rate * (1 - cpt_finance_share),
            f"{PREFIX}finance_it": (1 - cpt_rate) * it_finance_share,
            f"{PREFIX}general_it": (1 - cpt_rate) * (1 - it_finance_share)}


def register_all(tokenizer, length: int, specs: Mapping[str, TaskSpec] | None = None,
                 joint: Mapping | None = None, on_error: str = "raise",
                 seed: int = 42, cache: bool = True) -> dict[str, TaskStats]:
    """Register every task and the joint mixtures; returns live per-task statistics."""
    specs = dict(default_specs() if specs is None else specs)
    stats = {PREFIX + n: register_task(PREFIX + n, s, tokenizer, length, on_error, cache)
             for n, s in specs.items()}
    joint = dict(cpt_rate=0.5, cpt_finance_share=0.5, it_finance_share=0.2) | dict(joint or {})
    unknown = set(joint) - {"cpt_rate", "cpt_finance_share", "it_finance_share"}
    if unknown:
        raise ValueError(f"joint mixture: unknown knob(s) {sorted(unknown)}")
    rates = joint_rates(**joint)
    if all(n in stats for n in rates):
        register_mixture(PREFIX + "joint", rates)
        fin_cpt, fin_it = joint["cpt_finance_share"], joint["it_finance_share"]
        register_mixture(PREFIX + "cpt", {PREFIX + "finance_cpt": fin_cpt, PREFIX + "general_cpt": 1 - fin_cpt})
        register_mixture(PREFIX + "it", {PREFIX + "finance_it": fin_it, PREFIX + "general_it": 1 - fin_it})
        stats[PREFIX + "joint_downsample"] = _register_downsample(
            specs, rates, tokenizer, length, on_error, seed)
    return stats


# tasks registered over other tasks' files: what they read (the contamination check's view)
COMPOSITE_TASKS = {"joint_downsample": ("finance_it", "general_it", "finance_cpt", "general_cpt")}


def _register_downsample(specs, rates, tokenizer, length, on_error, seed) -> TaskStats:
    """CPT examples (finance/general by the configured shares, shuffled with `seed`) cut to
    the number of IT examples, concatenated with IT; seqio shuffles the union."""
    stats = TaskStats()

    def examples(split):
        its, cpts = [], {}
        for key in ("finance_it", "general_it"):
            if split in specs[key].files:
                its += list(iter_examples(specs[key], split, tokenizer, length, on_error, stats,
                                          task_id(PREFIX + key)))
        for key in ("finance_cpt", "general_cpt"):
            if split in specs[key].files:
                ex = list(iter_examples(specs[key], split, tokenizer, length, on_error, stats,
                                        task_id(PREFIX + key)))
                random.Random(seed).shuffle(ex)
                cpts[key] = ex
        share = rates[PREFIX + "finance_cpt"] / max(rates[PREFIX + "finance_cpt"] + rates[PREFIX + "general_cpt"], 1e-12)
        want_fin = round(len(its) * share)
        fin, gen = cpts.get("finance_cpt", []), cpts.get("general_cpt", [])
        take_fin = min(want_fin, len(fin))
        take_gen = min(len(its) - take_fin, len(gen))
        if take_fin + take_gen < len(its):  # one side ran short: fill from the other
            take_fin = min(len(its) - take_gen, len(fin))
        yield from its + fin[:take_fin] + gen[:take_gen]

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed
        return tf.data.Dataset.from_generator(lambda: examples(split), output_signature=SIGNATURES["chat"])

    name = PREFIX + "joint_downsample"
    splits = sorted(set(specs["finance_it"].files) | set(specs["general_it"].files))
    add_task(name, seqio.FunctionDataSource(dataset_fn, splits=splits), output_features("chat", tokenizer))
    return stats
