"""Preference pairs from judged trajectories: FAP (outcome) and SCP (stepwise correction)."""
from __future__ import annotations

from findap_jax.distill.prompts import NEXT_STEP


def fap_pairs(prompt: str, samples: list[dict], max_pairs: int) -> list[dict]:
    """Chosen = a trajectory judged correct, rejected = one judged wrong, on the whole
    trajectory; correct and wrong samples are matched in order, up to max_pairs. Empty
    trajectories take part in neither side."""
    good = [s for s in samples if s["verdict"] == "correct" and s["text"]]
    bad = [s for s in samples if s["verdict"] == "wrong" and s["text"]]
    return [{"type": "fap", "prompt": prompt, "chosen": g["text"], "rejected": b["text"],
             "chosen_sample": g["sample"], "rejected_sample": b["sample"]}
            for g, b in list(zip(good, bad))[:max_pairs]]


def scp_pair(prompt: str, sample: dict, reply: dict) -> tuple[dict | None, str | None]:
    """(pair, None) or (None, why it was dropped). The quoted step and the prefix must be
    verbatim in the trajectory, the prefix must come first, and the correction must differ
    from the wrong step."""
    text = sample["text"]
    step = reply["First incorrect step"].strip()
    prefix = reply["Reasoning up to incorrect"].strip()
    fix = reply["Step correction"].strip()
    if not step or step not in text:
        return None, "step_not_verbatim"
    if prefix and prefix not in text:
        return None, "prefix_not_verbatim"
    if prefix and text.find(prefix) > text.find(step):
        return None, "prefix_after_step"
    if not fix or fix == step:
        return None, "empty_or_same_correction"
    ctx = f"{prompt}\n\n{prefix}" if prefix else prompt
    return {"type": "scp", "prompt": ctx + NEXT_STEP, "chosen": fix, "rejected": step,
            "chosen_sample": None, "rejected_sample": sample["sample"]}, None
