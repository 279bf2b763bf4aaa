"""Rebuild the bundled corpora in `findap_jax/data/bundled/` from the shared data folder.

    python -m findap_jax.data.bundle --shared ../shared/data

Financial PhraseBank (Sentences_50Agree.txt, ISO-8859-1, CRLF) is de-duplicated and
split by a hash of each sentence (70% train / 10% dev / 20% test), so a sentence is in
exactly one split whatever order the file has. Train/dev become sentiment instructions;
test becomes FLARE-schema evaluation rows that no training mixture reads. Training data
comes from train splits only: tweets `sent_train.csv`, the training side of the FIN5 hash
split (`finner` evaluates the other side), FinQA `train.json`, the 10-K items, Alpaca and
HH-RLHF (`bundle_benchmarks.py`). Every training record (10-K: paragraph) that shares a
13-word n-gram with a row of any registered eval task is dropped and counted, so training
never sees evaluation text (FPB has many near-duplicate newswire lines about one company).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from findap_jax.data import bundle_benchmarks as bb
from findap_jax.data.contamination import eval_gram_sets, record_texts, shares_ngrams, words

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
SEC_ITEMS = ("item1", "item1a", "item7", "item7a")
# (shared file, bundled licenses/ name)
LICENSES = (("financial_phrasebank/License.txt", "financial_phrasebank_LICENSE.txt"),
            ("alpaca_1k/DATA_LICENSE", "alpaca_DATA_LICENSE.txt"),
            ("alpaca_1k/SOURCE.md", "alpaca_SOURCE.md"),
            ("sec_10k_items/SOURCE.md", "sec_10k_SOURCE.md"),
            ("twitter_fin_sentiment/SOURCE.md", "twitter_fin_sentiment_SOURCE.md"),
            ("finner_sec/LICENSE", "finner_sec_LICENSE.txt"),
            ("finner_sec/SOURCE.md", "finner_sec_SOURCE.md"),
            ("finqa/LICENSE", "finqa_LICENSE.txt"),
            ("finqa/SOURCE.md", "finqa_SOURCE.md"),
            ("hh_rlhf/LICENSE", "hh_rlhf_LICENSE.txt"),
            ("hh_rlhf/SOURCE.md", "hh_rlhf_SOURCE.md"))


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


def all_eval_grams(fpb_test: list[dict], n: int = 13) -> dict:
    """{gram length: hashes} of the content of every row of every registered eval task, the
    FPB test rows taken from `fpb_test` (the rows being built) rather than the package."""
    from findap_jax.data.contamination import eval_rows_for
    from findap_jax.eval.tasks import TASKS
    rows = eval_rows_for([t for t in TASKS if t != "fpb"])
    return eval_gram_sets([r["text"] for r in fpb_test] + [c for rs in rows.values() for _, c in rs], n)


def decontaminate(rows: list[dict], kind: str, grams: dict) -> tuple[list[dict], int]:
    """The records none of whose texts holds an eval n-gram, and how many were dropped."""
    kept = [r for r in rows if not any(shares_ngrams(t, grams) for t in record_texts(kind, r))]
    return kept, len(rows) - len(kept)


def clean_paragraphs(text: str, grams: dict, n: int = 13) -> tuple[str, int]:
    """A document without its paragraphs that hold an eval n-gram, also one spanning the
    join to the kept text before it; (text, paragraphs dropped)."""
    kept: list[str] = []
    tail: list[str] = []   # the last n - 1 words of the kept text
    dropped = 0
    for p in text.strip().split("\n"):
        if shares_ngrams(p, grams) or (tail and shares_ngrams(" ".join(tail) + " " + p, grams)):
            dropped += 1
        else:
            kept.append(p)
            tail = (tail + words(p))[-(n - 1):]
    return "\n".join(kept).strip(), dropped


def sec_10k(folder: str, grams: dict) -> tuple[list[dict], int, int]:
    """Items 1, 1A, 7, 7A of every filing as CPT records; (records, paragraphs dropped, items
    left out for being under 500 characters, i.e. failed extractions)."""
    out, dropped, short = [], 0, 0
    for f in sorted(glob.glob(os.path.join(folder, "*.json"))):
        d = json.load(open(f, encoding="utf-8"))
        for item in SEC_ITEMS:
            text, k = clean_paragraphs(d.get(item) or "", grams)
            dropped += k
            if len(text) > 500:
                out.append({"text": text, "source": d["source"], "item": item})
            else:
                short += 1
    return out, dropped, short


def build(shared: str, out: str | Path = BUNDLED) -> dict:
    """Write every derived file under `out`; {file or what was left out: count}."""
    out, counts = Path(out), {}

    def add(name: str, rows: list[dict], kind: str, left: dict | None = None) -> None:
        for reason, k in (left or {}).items():
            counts[f"{name} left out: {reason}"] = k
        kept, dropped = decontaminate(rows, kind, grams)
        counts[f"{name} dropped (n-gram overlap with eval tasks)"] = dropped
        counts[name] = _dump(out / name, kept)

    fpb = read_fpb(os.path.join(shared, "financial_phrasebank", "Sentences_50Agree.txt"))
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for i, (s, label) in enumerate(fpb):
        splits[fpb_split(s)].append((i, s, label))
    test = [{"id": f"fpb{i}", "query": FPB_QUERY.format(s=s), "answer": label, "text": s,
             "choices": list(FPB_LABELS), "gold": FPB_LABELS.index(label)}
            for i, s, label in splits["test"]]
    counts["fpb/test.jsonl"] = _dump(out / "fpb" / "test.jsonl", test)
    grams = all_eval_grams(test)
    for split in ("train", "dev"):
        rows = [{"messages": [{"role": "user", "content": FPB_INSTRUCTIONS[i % 3].format(s=s)},
                              {"role": "assistant", "content": label}]}
                for i, s, label in splits[split]]
        add(f"fpb/{split}.jsonl", rows, "chat")

    sec, dropped, short = sec_10k(os.path.join(shared, "sec_10k_items", "form10k"), grams)
    counts["finance_cpt/sec_10k.jsonl left out: items under 500 characters"] = short
    counts["finance_cpt/sec_10k.jsonl paragraphs dropped (n-gram overlap with eval tasks)"] = dropped
    counts["finance_cpt/sec_10k.jsonl"] = _dump(out / "finance_cpt" / "sec_10k.jsonl", sec)

    for name, fn, path in (
            ("finance_it/tweets_train.jsonl", bb.tweets_train, "twitter_fin_sentiment/sent_train.csv"),
            ("finance_it/fin5_train.jsonl", bb.fin5_train, "finner_sec/train_FIN5.txt")):
        rows, left = fn(os.path.join(shared, path))
        add(name, rows, "chat", left)
    # FinQA reports share boilerplate sentences with the eval reports: cut those (not the
    # gold evidence) and drop the records that still overlap
    rows, left = bb.finqa_train(os.path.join(shared, "finqa", "train.json"),
                                lambda t: shares_ngrams(t, grams))
    add("finance_it/finqa_train.jsonl", rows, "chat", left)

    alpaca = json.load(open(os.path.join(shared, "alpaca_1k", "alpaca_data_1k.json"), encoding="utf-8"))
    random.Random(20251125).shuffle(alpaca)
    rows = []
    for r in alpaca[:200]:
        q = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        rows.append({"messages": [{"role": "user", "content": q},
                                  {"role": "assistant", "content": r["output"]}]})
    add("general_it/alpaca_200.jsonl", rows, "chat")

    rows, left = bb.hh_rlhf(os.path.join(shared, "hh_rlhf", "harmless-base", "test.jsonl.gz"))
    add("general_preference/hh_rlhf.jsonl", rows, "preference", left)

    (out / "licenses").mkdir(parents=True, exist_ok=True)
    for src, dst in LICENSES:
        shutil.copyfile(os.path.join(shared, src), out / "licenses" / dst)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--out", default=str(BUNDLED), help="where to write (default: the package's bundled/)")
    args = ap.parse_args()
    for name, n in build(args.shared, args.out).items():
        print(f"{n:6d}  {name}")


if __name__ == "__main__":
    main()
