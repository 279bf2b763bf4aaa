"""Converters from public benchmarks' own file formats to FLARE rows (id, query, answer,
text, choices, gold + task-specific keys). Each reader yields (location, row) and raises
RecordError("file:line: ...") on a malformed record; the prompts are written here.

Layout expected under a data dir (as in ../shared/data): twitter_fin_sentiment/sent_valid.csv,
mmlu_finance/*_test.csv, finner_sec/*.txt (CoNLL), finqa/dev.json, tatqa/dev.json,
convfinqa_pot/convfinqa_dev.json, financebench/financebench_open_source.jsonl.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import math
import operator
import os
import re
from collections.abc import Iterator

from findap_jax.data.records import RecordError, read_raw

TWEET_LABELS = ["bearish", "bullish", "neutral"]     # dataset label ids 0, 1, 2
NER_TYPES = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}

TWEET_PROMPT = ("What is the sentiment of this finance tweet for the stock or market it mentions? "
                "Answer with one word: bearish, bullish or neutral.\nTweet: {text}\nAnswer:")
MMLU_PROMPT = "The following is a multiple-choice question about {subject}.\n\n{question}\n{options}"
NER_PROMPT = ("List the named entities in this sentence from a financial agreement: persons (PER), "
              "organizations (ORG), locations (LOC) and other names (MISC). Write one entity per "
              "line as \"entity, TYPE\", copying the entity text exactly; write \"None\" if there "
              "is none.\nSentence: {text}")
TABLE_QA_PROMPT = ("Read the table and the text from a company report and answer the question.\n\n"
                   "{text}\n\nQuestion: {question}")
CONV_QA_PROMPT = ("Read the text and the table from a company report, then answer the last question "
                  "of the conversation about them.\n\n{text}\n\n{history}Question: {question}")
EVIDENCE_QA_PROMPT = ("Answer the question about {company} using the evidence passages from its "
                      "filings.\n\n{text}\n\nQuestion: {question}")


def _csv_rows(path: str, n_fields: int, header: list[str] | None) -> Iterator[tuple[str, list[str]]]:
    try:
        text = open(path, "rb").read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: undecodable bytes (not UTF-8) at byte {e.start}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    first = True
    for rec in reader:
        where = f"{path}:{reader.line_num}"
        if first and header is not None:
            first = False
            if rec != header:
                raise RecordError(f"{where}: expected the header {','.join(header)}, got {','.join(rec)}")
            continue
        if not rec or not any(f.strip() for f in rec):
            continue
        if len(rec) != n_fields:
            raise RecordError(f"{where}: expected {n_fields} columns, got {len(rec)}")
        yield where, rec


def read_tweets(path: str) -> Iterator[tuple[str, dict]]:
    """zeroshot/twitter-financial-news-sentiment CSV (text,label with 0/1/2)."""
    for i, (where, (text, label)) in enumerate(_csv_rows(path, 2, ["text", "label"])):
        if label.strip() not in ("0", "1", "2"):
            raise RecordError(f"{where}: field 'label': expected 0, 1 or 2, got {label!r}")
        yield where, {"id": f"{os.path.basename(path)}:{i}", "text": text,
                      "query": TWEET_PROMPT.format(text=text.strip()), "choices": TWEET_LABELS,
                      "gold": int(label), "answer": TWEET_LABELS[int(label)]}


def read_mmlu(path: str) -> Iterator[tuple[str, dict]]:
    """MMLU test CSV without header: question, A, B, C, D, answer letter."""
    base = os.path.basename(path)
    subject = base.removesuffix("_test.csv").replace("_", " ")
    for i, (where, rec) in enumerate(_csv_rows(path, 6, None)):
        q, opts, ans = rec[0], rec[1:5], rec[5].strip()
        if ans not in ("A", "B", "C", "D"):
            raise RecordError(f"{where}: field 'answer': expected A, B, C or D, got {ans!r}")
        options = "\n".join(f"{k}. {o}" for k, o in zip("ABCD", opts))
        yield where, {"id": f"{base.removesuffix('.csv')}:{i}", "text": q, "subject": subject,
                      "query": MMLU_PROMPT.format(subject=subject, question=q, options=options),
                      "choices": ["A", "B", "C", "D"], "gold": "ABCD".index(ans), "answer": ans}


def conll_sentences(path: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(location of the first token, [(token, tag)]) per sentence of a `TOKEN POS - TAG` file."""
    sent, start = [], None
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise RecordError(f"{path}:{n}: undecodable bytes (not UTF-8) at column {e.start + 1}") from None
            if not line.strip() or line.startswith("-DOCSTART-"):
                if sent:
                    yield start, sent
                sent, start = [], None
                continue
            parts = line.split()
            if len(parts) < 2:
                raise RecordError(f"{path}:{n}: expected 'TOKEN ... TAG' columns, got {line!r}")
            tag = parts[-1]
            if tag != "O" and not (tag[:2] in ("I-", "B-") and tag[2:] in NER_TYPES):
                raise RecordError(f"{path}:{n}: field 'tag': unknown NER tag {tag!r}")
            start = start or f"{path}:{n}"
            sent.append((parts[0], tag))
    if sent:
        yield start, sent


def entities(tagged: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(text, TYPE) spans from IO/IOB tags: a run of one type is one entity; B- starts a new one."""
    out, cur, typ = [], [], None
    for tok, tag in tagged + [("", "O")]:
        t = tag[2:] if tag != "O" else None
        if cur and (t != typ or tag.startswith("B-")):
            out.append((" ".join(cur), typ))
            cur = []
        if t is not None:
            cur.append(tok)
        typ = t
    return out


def read_conll_ner(path: str) -> Iterator[tuple[str, dict]]:
    """Every sentence of a CoNLL file as an NER row (id: file name + sentence index)."""
    base = os.path.basename(path)
    for i, (where, sent) in enumerate(conll_sentences(path)):
        text = " ".join(t for t, _ in sent)
        ents = entities(sent)
        answer = "\n".join(f"{e}, {t}" for e, t in ents) or "None"
        yield where, {"id": f"{base}:{i}", "text": text, "query": NER_PROMPT.format(text=text),
                      "answer": answer, "entities": [list(e) for e in ents]}


FIN5_TEST_SHARE = 30   # percent of FIN5 sentences held out for `finner`; training gets the rest


def fin5_split(sentence: str) -> str:
    """The side ("test" or "train") of a FIN5 sentence, by a hash of its text: a sentence
    and every exact repeat of it fall on one side whatever the file order."""
    h = int(hashlib.sha1(sentence.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "test" if h < FIN5_TEST_SHARE else "train"


def read_finner(path: str) -> Iterator[tuple[str, dict]]:
    """`finner` rows: of a FIN5 file (FIN5 is the official train file, so the name contains
    FIN5) only the held-out test sentences, which no training file holds; of any other
    CoNLL file (e.g. the official FIN3 test file) every sentence."""
    heldout = "FIN5" in os.path.basename(path)
    for where, row in read_conll_ner(path):
        if not heldout or fin5_split(row["text"]) == "test":
            yield where, row


def _load_json(path: str):
    try:
        return json.loads(open(path, "rb").read().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: undecodable bytes (not UTF-8) at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}: invalid JSON at column {e.colno}: {e.msg}") from None


def table_text(table: list[list]) -> str:
    return "\n".join("| " + " | ".join(str(c).strip() for c in row) + " |" for row in table)


def read_finqa(path: str) -> Iterator[tuple[str, dict]]:
    """FinQA json: pre_text, table, post_text, qa{question, exe_ans, program}."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a list of FinQA records")
    for i, rec in enumerate(data):
        where = f"{path}[{i}]"
        try:
            qa = rec["qa"]
            context = "\n".join([" ".join(rec["pre_text"]), table_text(rec["table"]), " ".join(rec["post_text"])])
            question, gold = qa["question"], qa["exe_ans"]
        except KeyError as e:
            raise RecordError(f"{where}: field {e}: missing") from None
        except TypeError as e:
            raise RecordError(f"{where}: malformed FinQA record ({e})") from None
        if not (isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold)
                or isinstance(gold, str) and gold.strip().lower() in ("yes", "no")):
            raise RecordError(f"{where}: field 'qa.exe_ans': {gold!r} is neither a finite number nor yes/no")
        yield where, {"id": str(rec.get("id", i)), "text": context, "question": question,
                      "query": TABLE_QA_PROMPT.format(text=context, question=question),
                      "answer": str(gold), "exe_ans": gold, "program": qa.get("program", "")}


def read_tatqa(path: str) -> Iterator[tuple[str, dict]]:
    """TAT-QA json: per report a table, paragraphs and questions (answer, answer_type, scale)."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a list of TAT-QA reports")
    for i, rep in enumerate(data):
        try:
            paras = "\n".join(p["text"] for p in sorted(rep["paragraphs"], key=lambda p: p.get("order", 0)))
            context = table_text(rep["table"]["table"]) + "\n\n" + paras
            questions = rep["questions"]
        except KeyError as e:
            raise RecordError(f"{path}[{i}]: field {e}: missing") from None
        except (TypeError, AttributeError) as e:
            raise RecordError(f"{path}[{i}]: malformed TAT-QA report ({e})") from None
        for j, q in enumerate(questions):
            where = f"{path}[{i}].questions[{j}]"
            try:
                row = {"id": q["uid"], "text": context, "question": q["question"],
                       "query": TABLE_QA_PROMPT.format(text=context, question=q["question"]),
                       "gold_answer": q["answer"], "answer": json.dumps(q["answer"]),
                       "answer_type": q["answer_type"], "scale": q.get("scale", "")}
            except KeyError as e:
                raise RecordError(f"{where}: field {e}: missing") from None
            except (TypeError, AttributeError) as e:
                raise RecordError(f"{where}: malformed TAT-QA question ({e})") from None
            yield where, row


# -- ConvFinQA (Program-of-Thoughts packaging) -------------------------------------------
# Each turn's gold is the result of its Python program ("x0 = 60.94 - 25.14; ans = x0 / 25.14"),
# evaluated here without exec: number literals (and "13.4%" written as a literal), names
# assigned earlier, + - * / and unary minus, one comparison (gives "yes"/"no").

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CMPOPS = {ast.Gt: operator.gt, ast.Lt: operator.lt, ast.GtE: operator.ge, ast.LtE: operator.le,
           ast.Eq: operator.eq}
_PCT_LITERAL = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*%")
_ONLY_PCT = re.compile(r"^\s*ans\s*=\s*(-?(?:\d+(?:\.\d+)?|\.\d+)\s*%)\s*;?\s*$")


def _expr(node, env: dict):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ValueError(f"name {node.id!r} used before it is assigned")
        return env[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _expr(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_expr(node.left, env), _expr(node.right, env))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
        return _CMPOPS[type(node.ops[0])](_expr(node.left, env), _expr(node.comparators[0], env))
    raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")


def run_program(program: str):
    """The gold of one turn: `ans` of its program, a float rounded to 5 decimals (as FinQA
    stores `exe_ans`; "13.4%" reads as 0.134) or "yes"/"no" for a comparison. ValueError
    (with the reason) for anything else."""
    if not isinstance(program, str):
        raise ValueError(f"expected a string, got {type(program).__name__}")
    try:
        tree = ast.parse(_PCT_LITERAL.sub(r"(\1 / 100)", program), mode="exec")
    except SyntaxError as e:
        raise ValueError(f"not a program ({e.msg})") from None
    env: dict = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise ValueError("expected only assignments `name = expression`")
        try:
            env[stmt.targets[0].id] = _expr(stmt.value, env)
        except (ZeroDivisionError, OverflowError) as e:
            raise ValueError(f"{type(e).__name__}: {e}") from None
    if "ans" not in env:
        raise ValueError("no `ans = ...` assignment")
    ans = env["ans"]
    if isinstance(ans, bool):
        return "yes" if ans else "no"
    if not math.isfinite(ans):
        raise ValueError(f"ans is {ans}")
    return round(float(ans), 5)


def format_gold(value) -> str:
    """A turn's gold as shown in the conversation history: 35.8, 1.42403, 12, yes."""
    if isinstance(value, str):
        return value
    out = f"{value:.5f}".rstrip("0").rstrip(".")
    return "0" if out == "-0" else out


def read_convfinqa(path: str) -> Iterator[tuple[str, dict]]:
    """ConvFinQA dev as packaged by Program-of-Thoughts: per conversation `questions` and
    `programs` (one per turn), `text`, `table`, `id`, `answer` (last turn). One row per turn;
    its prompt holds the report and the earlier turns with their gold answers (ConvFinQA
    scores each turn given the gold history). Row id: conversation id + ":turn<k>" (0-based)."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a list of ConvFinQA conversations")
    for i, conv in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(conv, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(conv).__name__}")
        try:
            cid, questions, programs = conv["id"], conv["questions"], conv["programs"]
            context = f"{conv['text'].strip()}\n\n{conv['table'].strip()}"
        except KeyError as e:
            raise RecordError(f"{where}: field {e}: missing") from None
        except AttributeError:
            raise RecordError(f"{where}: fields 'text' and 'table' must be strings") from None
        if not isinstance(questions, list) or not isinstance(programs, list) or not questions:
            raise RecordError(f"{where}: fields 'questions' and 'programs' must be non-empty lists")
        if len(questions) != len(programs):
            raise RecordError(f"{where}: {len(questions)} questions but {len(programs)} programs")
        history = []
        for k, (question, program) in enumerate(zip(questions, programs)):
            turn = f"{where}.questions[{k}]"
            if not isinstance(question, str) or not question.strip():
                raise RecordError(f"{turn}: expected a non-empty string")
            try:
                gold = run_program(program)
            except ValueError as e:
                raise RecordError(f"{where}.programs[{k}]: {program!r}: {e}") from None
            if k == len(programs) - 1 and not _same_gold(gold, conv.get("answer")):
                raise RecordError(f"{where}.programs[{k}]: the last program gives {gold!r} but "
                                  f"field 'answer' is {conv.get('answer')!r}")
            shown = "".join(f"Q: {q}\nA: {a}\n" for q, a in history)
            yield turn, {"id": f"{cid}:turn{k}", "conversation_id": str(cid), "turn": k, "text": context,
                         "question": question, "history": [list(h) for h in history],
                         "query": CONV_QA_PROMPT.format(text=context, question=question,
                                                        history=f"Conversation so far:\n{shown}\n" if shown else ""),
                         "answer": format_gold(gold), "exe_ans": gold, "program": program}
            m = _ONLY_PCT.match(program)
            history.append((question, m.group(1).replace(" ", "") if m else format_gold(gold)))


def _same_gold(gold, answer) -> bool:
    if isinstance(gold, str) or isinstance(answer, str):
        return str(gold).strip().lower() == str(answer).strip().lower()
    try:
        return round(float(answer), 5) == gold
    except (TypeError, ValueError):
        return False


# -- FinanceBench (open-source sample) --------------------------------------------------

def read_financebench(path: str) -> Iterator[tuple[str, dict]]:
    """FinanceBench JSON Lines: financebench_id, company, doc_name, question, answer and
    `evidence` (passages from the filing). Open QA with the evidence passages in the prompt;
    the row id is the financebench_id."""
    for where, rec, err in read_raw(path, split="test"):
        if err is not None:
            raise RecordError(f"{where}: {err}")
        if not isinstance(rec, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for key in ("financebench_id", "question", "answer"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise RecordError(f"{where}: field '{key}': missing or not a non-empty string")
        ev = rec.get("evidence")
        if not isinstance(ev, list) or not ev:
            raise RecordError(f"{where}: field 'evidence': expected a non-empty list of passages")
        passages = []
        for j, e in enumerate(ev):
            text = e.get("evidence_text") if isinstance(e, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise RecordError(f"{where}: field 'evidence'[{j}]: no evidence_text")
            doc = e.get("doc_name") or rec.get("doc_name") or "filing"
            passages.append(f"Evidence {j + 1} ({doc}):\n{text.strip()}")
        context = "\n\n".join(passages)
        company = str(rec.get("company") or "the company")
        yield where, {"id": rec["financebench_id"], "financebench_id": rec["financebench_id"],
                      "company": company, "doc_name": rec.get("doc_name"), "text": context,
                      "question": rec["question"], "answer": rec["answer"],
                      "question_type": rec.get("question_type"),
                      "question_reasoning": rec.get("question_reasoning"),
                      "query": EVIDENCE_QA_PROMPT.format(company=company, text=context,
                                                         question=rec["question"].strip())}


READERS = {"tweets": read_tweets, "mmlu": read_mmlu, "conll_ner": read_conll_ner,
           "finner": read_finner, "finqa": read_finqa, "tatqa": read_tatqa, "convfinqa": read_convfinqa,
           "financebench": read_financebench}
