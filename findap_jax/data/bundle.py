"""Rebuild the bundled corpora in `findap_jax/data/bundled/` from the shared data folder.

    python -m findap_jax.data.bundle --shared ../shared/data

Financial PhraseBank (Sentences_50Agree.txt, ISO-8859-1, CRLF) is de-duplicated and
split by a hash of each sentence (70% train / 10% dev / 20% test), so a sentence is in
exactly one split whatever order the file has. Train/dev become sentiment instructions;
test becomes FLARE-schema evaluation rows that no training mixture reads. Train/dev
sentences that share a 13-word n-gram with a test sentence (FPB has many near-duplicate
newswire lines about the same company) are dropped, and so are 10-K paragraphs that share
one with any bundled eval task, so training never sees evaluation text.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
from pathlib import Path

from findap_jax.data.contamination import eval_gram_sets, shares_ngrams

BUNDLED = Path(__file__).parent / "bundled"
FPB_LABELS = ("negative", "neutral", "positive")
FPB_INSTRUCTIONS = (
    "What is the sentiment of this financial news sentence? Answer with negative, neutral or positive.\n\n{s}",
    "Classify the sentiment of the following sentence from a financial news article as negative, neutral or positive.\nSentence: {s}",
    "Sentence: {s}\nIs the sentiment of this sentence for investors negative, neutral or positive?",
)
# The evaluator's zero-shot prompt (FLARE `query`), also used by the tests.
FPB_QUERY = ("Analyze the sentiment of this statement extracted from a financial news article. "
             "Provide your answer as either negative, positive, or neutral.\nText: {s}\nAnswer:")


def fpb_split(sentence: str) -> str:
    h = int(hashlib.sha1(sentence.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if h < 70 else "dev" if h < 80 else "test"


def read_fpb(path: str) -> list[tuple[str, str]]:
    rows, seen = [], set()
    raw = open(path, "rb").read().decode("iso-8859-1").replace("\r\n", "\n")
    for n, line in enumerate(raw.split("\n"), start=1):
        if not line.strip():
            continue
        sentence, sep, label = line.rpartition("@")
        if not sep or label not in FPB_LABELS:
            raise ValueError(f"{path}:{n}: expected 'sentence@label', got {line[:60]!r}")
        if sentence not in seen:
            seen.add(sentence)
            rows.append((sentence.strip(), label))
    return rows


def _dump(path: Path, rows) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)


def build(shared: str) -> dict:
    counts = {}
    fpb = read_fpb(os.path.join(shared, "financial_phrasebank", "Sentences_50Agree.txt"))
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for i, (s, label) in enumerate(fpb):
        splits[fpb_split(s)].append((i, s, label))
    test_grams = eval_gram_sets(s for _, s, _ in splits["test"])
    for split in ("train", "dev"):
        kept = [(i, s, label) for i, s, label in splits[split] if not shares_ngrams(s, test_grams)]
        counts[f"fpb/{split} dropped (n-gram overlap with test)"] = len(splits[split]) - len(kept)
        rows = [{"messages": [{"role": "user", "content": FPB_INSTRUCTIONS[i % 3].format(s=s)},
                              {"role": "assistant", "content": label}]}
                for i, s, label in kept]
        counts[f"fpb/{split}.jsonl"] = _dump(BUNDLED / "fpb" / f"{split}.jsonl", rows)
    test = [{"id": f"fpb{i}", "query": FPB_QUERY.format(s=s), "answer": label, "text": s,
             "choices": list(FPB_LABELS), "gold": FPB_LABELS.index(label)}
            for i, s, label in splits["test"]]
    counts["fpb/test.jsonl"] = _dump(BUNDLED / "fpb" / "test.jsonl", test)

    # every bundled eval task's content: CPT paragraphs sharing an n-gram with it are dropped
    # (10-K text and TAT-QA/FinQA reports come from the same kind of filings)
    from findap_jax.data.contamination import eval_rows_for
    from findap_jax.eval.tasks import TASKS
    eval_grams = eval_gram_sets(c for rows in eval_rows_for(list(TASKS)).values() for _, c in rows)
    filings = sorted(glob.glob(os.path.join(shared, "sec_10k_items", "form10k", "*.json")))[:3]
    sec, dropped = [], 0
    for f in filings:
        d = json.load(open(f, encoding="utf-8"))
        for item in ("item1", "item7", "item7a"):
            paras = (d.get(item) or "").strip().split("\n")
            kept: list[str] = []
            for p in paras:   # an n-gram may also span a paragraph break
                if not shares_ngrams(p, eval_grams) and not (kept and shares_ngrams(kept[-1] + "\n" + p, eval_grams)):
                    kept.append(p)
            dropped += len(paras) - len(kept)
            text = "\n".join(kept).strip()
            if len(text) > 500:
                sec.append({"text": text, "source": d["source"], "item": item})
    counts["finance_cpt/sec_10k paragraphs dropped (n-gram overlap with eval tasks)"] = dropped
    counts["finance_cpt/sec_10k.jsonl"] = _dump(BUNDLED / "finance_cpt" / "sec_10k.jsonl", sec)

    alpaca = json.load(open(os.path.join(shared, "alpaca_1k", "alpaca_data_1k.json"), encoding="utf-8"))
    random.Random(20251125).shuffle(alpaca)
    rows = []
    for r in alpaca[:200]:
        q = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        rows.append({"messages": [{"role": "user", "content": q},
                                  {"role": "assistant", "content": r["output"]}]})
    counts["general_it/alpaca_200.jsonl"] = _dump(BUNDLED / "general_it" / "alpaca_200.jsonl", rows)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default="../shared/data")
    for name, n in build(ap.parse_args().shared).items():
        print(f"{n:6d}  {name}")


if __name__ == "__main__":
    main()
