"""Reading a generative reward model's replies: JSON that may be fenced, followed by
text, or written with single quotes. Unparseable replies are retried, then counted."""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator, Sequence

FAP_KEYS = ("Justification", "Correctness")
SCP_KEYS = ("Justification", "First incorrect step", "Reasoning up to incorrect", "Step correction")


def _balanced_objects(text: str) -> list[str]:
    """Top-level {...} spans, skipping braces inside quoted strings."""
    out, depth, start, quote, esc = [], 0, None, None, False
    for i, ch in enumerate(text):
        if quote:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'" and depth:
            quote = ch
        elif ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                out.append(text[start:i + 1])
    return out


def _objects(text: str) -> Iterator[dict]:
    """Every JSON object in a reply (fenced ones first; double or single quotes)."""
    if not isinstance(text, str):
        return
    # no \s* before the lazy group (candidates are stripped): it backtracks quadratically
    # through long blank runs after an unclosed fence
    fenced = re.findall(r"```(?:json)?(.*?)```", text, flags=re.DOTALL)
    for cand in fenced + _balanced_objects(text):
        cand = cand.strip()
        for loader in (json.loads, ast.literal_eval):
            try:
                obj = loader(cand)
            # OverflowError: literal_eval of `<huge int> + 1j` (int -> float)
            except (ValueError, SyntaxError, TypeError, OverflowError, MemoryError, RecursionError):
                continue
            if isinstance(obj, dict):
                yield obj
                break


def parse_json(text: str) -> dict | None:
    """The first JSON object in a reply (fenced or bare, double or single quotes), or None."""
    return next(_objects(text), None)


def _fields(obj: dict, keys: Sequence[str]) -> dict | None:
    # Only string keys can name a field (str() of a huge int key would even raise).
    lower = {k.strip().lower(): v for k, v in obj.items() if isinstance(k, str)}
    out = {}
    for k in keys:
        v = lower.get(k.lower())
        if not isinstance(v, str):
            return None
        out[k] = v
    if "Correctness" in out:
        c = out["Correctness"].strip().lower()
        if c not in ("correct", "wrong", "incorrect"):
            return None
        out["Correctness"] = "correct" if c == "correct" else "wrong"
    return out


def parse_reply(text: str, keys: Sequence[str]) -> dict | None:
    """The first object in the reply (or directly inside one: {"verdict": {...}}) that has
    every key with a string value ("Correctness" must be correct/wrong); keys are matched
    case-insensitively. Objects the reply shows before its verdict (the figures it used, a
    format it restates) are passed over."""
    for obj in _objects(text):
        for cand in (obj, *(v for v in obj.values() if isinstance(v, dict))):
            out = _fields(cand, keys)
            if out is not None:
                return out
    return None


def ask_each(judge: Callable[..., list[str]], prompts: Sequence[str], keys: Sequence[str], retries: int,
             seeds: Sequence[int] | None = None) -> tuple[list[dict | None], list[int]]:
    """Ask the judge every prompt; unparseable replies are asked again (attempt number passed
    to the judge so a sampler can vary its seed) up to `retries` times. With `seeds` (one
    per prompt) the judge is called as judge(prompts, attempt, their seeds), so a prompt's
    retries need not depend on which prompts share its call. Returns the parsed replies
    (None when every attempt failed) and each prompt's number of unparseable replies."""
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"seeds: {len(seeds)} given for {len(prompts)} prompts")
    results: list[dict | None] = [None] * len(prompts)
    failures = [0] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not pending:
            break
        batch = [prompts[i] for i in pending]
        replies = (judge(batch, attempt) if seeds is None
                   else judge(batch, attempt, [seeds[i] for i in pending]))
        if len(replies) != len(batch):
            raise ValueError(f"the judge returned {len(replies)} replies for {len(batch)} prompts")
        still = []
        for i, reply in zip(pending, replies):
            parsed = parse_reply(reply, keys)
            if parsed is None:
                failures[i] += 1
                still.append(i)
            else:
                results[i] = parsed
        pending = still
    return results, failures


def ask(judge: Callable[..., list[str]], prompts: Sequence[str], keys: Sequence[str],
        retries: int, seeds: Sequence[int] | None = None) -> tuple[list[dict | None], int]:
    """`ask_each` with the unparseable replies summed."""
    results, failures = ask_each(judge, prompts, keys, retries, seeds)
    return results, sum(failures)
