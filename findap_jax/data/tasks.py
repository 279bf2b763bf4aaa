"""seqio tasks over local record files, tokenised in Python by the model's tokenizer.

A task is (kind, files per split). Its source reads the files in order, checks each
record (errors name file:line and field, or count a skip), tokenises it and yields
task features; seqio handles sharding across hosts, shuffling, mixing and the feature
converter packs rows. Statistics of what was read, dropped and skipped are kept per task.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from findap_jax.data import preprocess
from findap_jax.data.records import SkipCounter, read_records
from findap_jax.data.vocabulary import TokenizerVocabulary

KINDS = ("cpt", "chat", "preference")
_SEQ = tf.TensorSpec([None], tf.int32)
_ID = tf.TensorSpec([], tf.int32)  # which task an example came from (mixture statistics)
SIGNATURES = {
    "cpt": {"targets": _SEQ, "loss_mask": _SEQ, "task_id": _ID},
    "chat": {"targets": _SEQ, "loss_mask": _SEQ, "task_id": _ID},
    "preference": {**{k: _SEQ for k in ("chosen_tokens", "chosen_mask", "rejected_tokens",
                                         "rejected_mask")}, "task_id": _ID},
}


def task_id(name: str) -> int:
    """Stable small id of a task name (crc32), carried by every example."""
    import zlib
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def output_features(kind: str, tokenizer) -> dict:
    vocab = TokenizerVocabulary(tokenizer)
    feats = {k: seqio.Feature(vocab, add_eos=False, dtype=tf.int32)
             for k in SIGNATURES[kind] if k != "task_id"}
    feats["task_id"] = seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False,
                                     dtype=tf.int32, rank=0, required=False)
    return feats


@dataclasses.dataclass
class TaskSpec:
    kind: str
    files: Mapping[str, str | Sequence[str]]  # split -> glob pattern(s)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task kind {self.kind!r} unknown; choose one of {KINDS}")


@dataclasses.dataclass
class TaskStats:
    records: int = 0
    examples: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    too_long: int = 0
    skipped: SkipCounter = dataclasses.field(default_factory=SkipCounter)


def iter_examples(spec: TaskSpec, split: str, tokenizer, length: int, on_error: str = "raise",
                  stats: TaskStats | None = None, tid: int = 0) -> Iterator[dict]:
    """Task features of every record of `split`, in file order."""
    if split not in spec.files:
        raise ValueError(f"split {split!r} not available (have {sorted(spec.files)})")
    stats = stats if stats is not None else TaskStats()
    kind = "chat" if spec.kind == "chat" else spec.kind
    for where, rec in read_records(spec.files[split], kind, on_error, stats.skipped, split=split):
        stats.records += 1
        if spec.kind == "cpt":
            exs = list(preprocess.cpt_examples([(where, rec["text"])], tokenizer, length))
        elif spec.kind == "chat":
            ex = preprocess.chat_example(tokenizer, rec["messages"], length, where)
            exs = [ex] if ex is not None else []
        else:
            ex = preprocess.preference_example(tokenizer, rec, length, where)
            exs = [ex] if ex is not None else []
        if not exs:
            stats.too_long += 1
            continue
        for ex in exs:
            stats.examples += 1
            first = next(iter(ex.values()))
            stats.tokens += len(first)
            stats.loss_tokens += int(np.sum(ex.get("loss_mask", ex.get("chosen_mask"))))
            ex["task_id"] = np.int32(tid)
            yield ex


def _training_examples(spec: TaskSpec, split: str, tokenizer, length: int, on_error: str,
                       stats: TaskStats, tid: int) -> Iterator[dict]:
    """`iter_examples` for a seqio source; a train split with none is an error (repeated,
    an empty dataset ends training, even inside a mixture, with a bare StopIteration)."""
    n = 0
    for ex in iter_examples(spec, split, tokenizer, length, on_error, stats, tid):
        n += 1
        yield ex
    if not n and split == "train":
        raise ValueError(f"split {split!r} of {spec.files[split]} holds no training example "
                         f"({stats.records} records read, {stats.too_long} too long for {length} tokens, "
                         f"{stats.skipped.total} skipped as bad)")


def make_source(spec: TaskSpec, tokenizer, length: int, on_error: str, stats: TaskStats, tid: int,
                cache: bool = True):
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # file order is fixed; seqio shuffles examples
        ds = tf.data.Dataset.from_generator(
            lambda: _training_examples(spec, split, tokenizer, length, on_error, stats, tid),
            output_signature=SIGNATURES[spec.kind])
        # Later epochs replay tokenised examples from memory instead of re-reading files.
        return ds.cache() if cache else ds
    return seqio.FunctionDataSource(dataset_fn, splits=list(spec.files))


def register_task(name: str, spec: TaskSpec, tokenizer, length: int,
                  on_error: str = "raise", cache: bool = True) -> TaskStats:
    """(Re)register `name` in seqio's TaskRegistry for this tokenizer and length."""
    stats = TaskStats()
    add_task(name, make_source(spec, tokenizer, length, on_error, stats, task_id(name), cache),
             output_features(spec.kind, tokenizer))
    return stats


def add_task(name: str, source, features) -> None:
    """Register a task, replacing one of the same name (tasks are per tokenizer and length)."""
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=source, output_features=features, preprocessors=[])


def register_mixture(name: str, rates: Mapping[str, float]) -> None:
    """(Re)register a rate mixture; rates must be >= 0 with a positive sum."""
    if not rates:
        raise ValueError(f"mixture {name!r} has no tasks")
    bad = {k: v for k, v in rates.items() if not (isinstance(v, (int, float)) and v >= 0)}
    if bad:
        raise ValueError(f"mixture {name!r}: rates must be numbers >= 0, got {bad}")
    if sum(rates.values()) <= 0:
        raise ValueError(f"mixture {name!r}: rates {dict(rates)} sum to zero")
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, [(t, float(r)) for t, r in rates.items() if r > 0])
