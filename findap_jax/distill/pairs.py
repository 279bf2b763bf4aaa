"""Preference pairs from judged trajectories: FAP (outcome) and SCP (stepwise correction)."""
from __future__ import annotations

import re

from findap_jax.distill.prompts import NEXT_STEP


def fap_pairs(prompt: str, samples: list[dict], max_pairs: int) -> list[dict]:
    """Chosen = a trajectory judged correct, rejected = one judged wrong, on the whole
    trajectory; correct and wrong samples are matched in order, up to max_pairs. Empty
    trajectories take part in neither side, nor does a text judged both correct and wrong
    (identical samples can be: each is judged on its own seed), which would make a pair
    whose chosen and rejected are the same."""
    def texts(verdict):
        return {s["text"] for s in samples if s["verdict"] == verdict}
    torn = texts("correct") & texts("wrong")
    good = [s for s in samples if s["verdict"] == "correct" and s["text"] and s["text"] not in torn]
    bad = [s for s in samples if s["verdict"] == "wrong" and s["text"] and s["text"] not in torn]
    return [{"type": "fap", "prompt": prompt, "chosen": g["text"], "rejected": b["text"],
             "chosen_sample": g["sample"], "rejected_sample": b["sample"]}
            for g, b in list(zip(good, bad))[:max_pairs]]


def _whole_lines(text: str, start: int, end: int) -> bool:
    head, tail = text[:start].rstrip(" \t"), text[end:].lstrip(" \t")
    return (not head or head.endswith("\n")) and (not tail or tail.startswith(("\n", "\r")))


def scp_pair(prompt: str, sample: dict, reply: dict) -> tuple[dict | None, str | None]:
    """(pair, None) or (None, why it was dropped). The quoted step must be whole lines of
    the trajectory, the quoted prefix exactly the text before it (whitespace aside), and the
    correction must differ from the wrong step. The context is the trajectory's own text
    before the step, so nothing between the prefix and the step is lost or repeated."""
    text = sample["text"]
    step = reply["First incorrect step"].strip()
    prefix = reply["Reasoning up to incorrect"].strip()
    fix = reply["Step correction"].strip()
    starts = [m.start() for m in re.finditer(re.escape(step), text)] if step else []
    if not starts:
        return None, "step_not_verbatim"
    # the first place the quote stands as whole lines (it may also occur inside an earlier line)
    whole = [i for i in starts if _whole_lines(text, i, i + len(step))]
    if not whole:
        return None, "step_not_whole_lines"
    want = " ".join(prefix.split())
    start = next((i for i in whole if " ".join(text[:i].split()) == want), None)
    if start is None:
        return None, "prefix_not_just_before_step" if prefix in text else "prefix_not_verbatim"
    before = text[:start].strip()
    if not fix or fix == step:
        return None, "empty_or_same_correction"
    ctx = f"{prompt}\n\n{before}" if before else prompt
    return {"type": "scp", "prompt": ctx + NEXT_STEP, "chosen": fix, "rejected": step,
            "chosen_sample": None, "rejected_sample": sample["sample"]}, None
