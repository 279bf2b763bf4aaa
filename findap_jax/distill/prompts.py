"""Distillation prompts: CFA-style exercises, the policy's reasoning prompt and the two
GenRM judge prompts (written here after the paper's description of FAP and SCP)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from findap_jax.data.records import RecordError, read_records
from findap_jax.eval.extract import LETTERS

BUNDLED = Path(__file__).parent / "bundled" / "cfa_exercises.jsonl"

POLICY_PROMPT = (
    "{exercise}\n\n"
    "Solve it step by step, one step per line starting with \"Step 1:\", \"Step 2:\" and so on. "
    "End with your final choice on its own line as \"Selection: [[X]]\" where X is {letters}.")

FAP_JUDGE = (
    "You are grading an answer to a finance exam question.\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nProposed answer:\n{proposed}\n\n"
    "Decide whether the proposed answer's final choice is correct. An answer that gives no final "
    "choice, or more than one, is wrong. Reply with JSON only, exactly in this form:\n"
    "{{\"Justification\": \"<one or two sentences>\", \"Correctness\": \"correct\" or \"wrong\"}}")

SCP_JUDGE = (
    "You are checking a wrong step-by-step solution to a finance exam question.\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nWrong solution:\n{proposed}\n\n"
    "Find the first step that is incorrect. Reply with JSON only, with these keys:\n"
    "\"Justification\": why that step is wrong;\n"
    "\"First incorrect step\": the incorrect step, copied exactly from the solution;\n"
    "\"Reasoning up to incorrect\": all of the solution before that step, copied exactly;\n"
    "\"Step correction\": one corrected step that should replace it.")

NEXT_STEP = "\n\nWhat is the next step?"


def load_exercises(files: str | list | None = None, on_error: str = "raise") -> list[dict]:
    """Exercises {id, question, scenario, exhibit, choices {letter: text}, answer, reference}.
    The answer must be one of the choice letters; ids must be unique."""
    out, seen = [], set()
    for where, rec in read_records(files or str(BUNDLED), "cfa", on_error=on_error):
        choices = rec["answer_choices"]
        if isinstance(choices, list):
            choices = {chr(ord("A") + i): c for i, c in enumerate(choices)}
        letters = sorted(choices)   # answers are read back as letters by their place: A, B, C, ...
        if letters != list(LETTERS[:len(letters)]):
            raise RecordError(f"{where}: field 'answer_choices': keys {letters} must be the letters "
                              f"{', '.join(LETTERS[:len(letters)])}")
        choices = {k: choices[k] for k in letters}
        answer = rec["answer"].strip().strip("[]").strip()
        if answer not in choices:
            raise RecordError(f"{where}: field 'answer': {answer!r} is not one of the choices "
                              f"{', '.join(choices)}")
        # without an id, one from the content: a line number or a path's spelling would change
        # when the file is edited or named differently, and a resumed run would redo everything
        ex_id = rec.get("id")
        if not ex_id:   # a repeated exercise gets its occurrence number
            ex_id = "sha:" + hashlib.sha256(json.dumps(
                [rec["question"], rec.get("scenario", ""), rec.get("exhibit", ""), choices, answer],
                sort_keys=True).encode()).hexdigest()[:16]
            n = 1
            while (f"{ex_id}#{n}" if n > 1 else ex_id) in seen:
                n += 1
            ex_id = f"{ex_id}#{n}" if n > 1 else ex_id
        if ex_id in seen:
            raise RecordError(f"{where}: field 'id': {ex_id!r} repeats")
        seen.add(ex_id)
        out.append({"id": ex_id, "question": rec["question"], "scenario": rec.get("scenario", ""),
                    "exhibit": rec.get("exhibit", ""), "choices": dict(choices), "answer": answer,
                    "reference": rec.get("reference") or f"The correct choice is {answer}: {choices[answer]}"})
    return out


def exercise_text(ex: dict) -> str:
    """Scenario, exhibit, question and options: what the judge is shown as the question."""
    context = "".join(f"{part}\n\n" for part in (ex["scenario"], ex["exhibit"]) if part)
    options = "\n".join(f"{k}. {v}" for k, v in ex["choices"].items())
    return f"{context}Question: {ex['question']}\n{options}"


def policy_prompt(ex: dict) -> str:
    """The exercise plus the instruction to reason in numbered steps and end with [[X]]."""
    letters = list(ex["choices"])
    named = letters[0] if len(letters) == 1 else ", ".join(letters[:-1]) + " or " + letters[-1]
    return POLICY_PROMPT.format(exercise=exercise_text(ex), letters=named)
