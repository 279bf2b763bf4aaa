"""Converters from public benchmarks' own file formats to FLARE rows (id, query, answer,
text, choices, gold + task-specific keys). Each reader yields (location, row) and raises
RecordError("file:line: ...") on a malformed record; the prompts are written here.

Layout expected under a data dir (as in ../shared/data): twitter_fin_sentiment/sent_valid.csv,
mmlu_finance/*_test.csv, finner_sec/*.txt (CoNLL), finqa/dev.json, tatqa/dev.json.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator

from findap_jax.data.records import RecordError

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
    base = os.path.basename(path)
    for i, (where, sent) in enumerate(conll_sentences(path)):
        text = " ".join(t for t, _ in sent)
        ents = entities(sent)
        answer = "\n".join(f"{e}, {t}" for e, t in ents) or "None"
        yield where, {"id": f"{base}:{i}", "text": text, "query": NER_PROMPT.format(text=text),
                      "answer": answer, "entities": [list(e) for e in ents]}


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


READERS = {"tweets": read_tweets, "mmlu": read_mmlu, "conll_ner": read_conll_ner,
           "finqa": read_finqa, "tatqa": read_tatqa}
