"""Config -> seqio datasets -> a resumable iterator of numpy batches.

Each host reads its own shard (`seqio.ShardInfo(jax.process_index(), process_count)`).
The pipeline is deterministic for a seed, so the iterator's position is just the number
of batches taken; restoring rebuilds the dataset and skips that many batches.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf

from findap_jax.data.features import LMFeatureConverter, PreferenceFeatureConverter
from findap_jax.data.registry import PREFIX, default_specs, register_all
from findap_jax.data.tasks import TaskSpec, TaskStats, register_mixture


SPLITS = ("train", "validation", "test")


def task_specs(data_cfg) -> dict[str, TaskSpec]:
    specs = default_specs(data_cfg.data_dir) if data_cfg.data_dir else default_specs()
    for name, entry in dict(data_cfg.tasks).items():
        entry = dict(entry)
        kind = entry.pop("kind", specs[name].kind if name in specs else None)
        if kind is None:
            raise ValueError(f"data.tasks.{name}: a new task needs a 'kind'")
        if not entry:
            raise ValueError(f"data.tasks.{name}: give file patterns per split (train=..., validation=...)")
        odd = sorted(set(entry) - set(SPLITS))
        if odd:
            near = {k: difflib.get_close_matches(k, SPLITS, n=1) for k in odd}
            hints = "".join(f"; {k!r}: did you mean {v[0]!r}?" for k, v in near.items() if v)
            raise ValueError(f"data.tasks.{name}: unknown key(s) {odd}; a task entry takes 'kind' and "
                             f"the splits {', '.join(SPLITS)}{hints}")
        specs[name] = TaskSpec(kind, entry)
    return specs


def register(data_cfg, tokenizer) -> dict[str, TaskStats]:
    stats = register_all(tokenizer, data_cfg.seq_len, task_specs(data_cfg), dict(data_cfg.joint),
                         data_cfg.on_bad_record, data_cfg.seed, data_cfg.cache_in_memory)
    rates = dict(data_cfg.rates)
    if rates:   # data.rates = {task or mixture: rate} -> mixture "findap_custom"
        known = seqio.TaskRegistry.names() | seqio.MixtureRegistry.names()
        resolved = {resolve_name(n): r for n, r in rates.items()}
        unknown = [n for n, r in zip(rates, resolved) if r not in known]
        if unknown:
            raise ValueError(f"data.rates: unknown task(s) {unknown}")
        register_mixture(PREFIX + "custom", resolved)
    return stats


def resolve_name(name: str) -> str:
    """A registered task/mixture name as given, else with the `findap_` prefix."""
    known = seqio.TaskRegistry.names() | seqio.MixtureRegistry.names()
    return name if name in known or name.startswith(PREFIX) else PREFIX + name


def is_preference(name: str) -> bool:
    task_or_mix = seqio.get_mixture_or_task(name)
    tasks = task_or_mix.tasks if isinstance(task_or_mix, seqio.Mixture) else [task_or_mix]
    return all("chosen_tokens" in t.output_features for t in tasks)


def build_dataset(data_cfg, split: str = "train", *, num_epochs: int | None = None,
                  shuffle: bool = True, shard: tuple[int, int] | None = None,
                  mixture: str | None = None, drop_remainder: bool = True):
    """tf.data of batches for this host; `register` must have run for the tokenizer.
    drop_remainder=False keeps a short last batch (evaluation, reference passes)."""
    name = resolve_name(mixture or data_cfg.mixture)
    length = data_cfg.seq_len
    index, count = shard or (jax.process_index(), jax.process_count())
    if data_cfg.batch_size % count:
        raise ValueError(f"data.batch_size={data_cfg.batch_size} must divide by the {count} hosts")
    if is_preference(name):
        conv = PreferenceFeatureConverter()
        lengths = {k: length for k in ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask")}
    else:
        conv = LMFeatureConverter(pack=data_cfg.pack)
        lengths = {"targets": length, "loss_mask": length}
    per_host = data_cfg.batch_size // count
    ds = seqio.get_dataset(name, lengths, conv, dataset_split=split, shuffle=shuffle,
                           num_epochs=num_epochs, seed=data_cfg.seed,
                           shard_info=seqio.ShardInfo(index, count),
                           batch_size=per_host if drop_remainder else None, verbose=False)
    return ds if drop_remainder else ds.batch(per_host, drop_remainder=False)


class DataIterator:
    """Numpy batches with a checkpointable position (`state()` / `restore(state)`)."""

    def __init__(self, factory):
        self._factory = factory
        self._consumed = 0
        self._it = None

    def _ensure(self):
        if self._it is None:
            ds = self._factory()
            if self._consumed:
                ds = ds.skip(self._consumed)
            self._it = ds.as_numpy_iterator()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        self._ensure()
        try:
            batch = next(self._it)
        except tf.errors.OpError as e:   # our readers' errors, raised inside tf.data's generators
            # the message's own exception only (its traceback lists any it was raised while handling)
            m = re.match(r"\s*(?:\{\{[^}]*\}\}\s*)?(?:ValueError|RecordError|FileNotFoundError): (.+)", e.message)
            if m is None:
                raise
            raise ValueError(m.group(1).strip()) from None
        self._consumed += 1
        return batch

    def state(self) -> dict:
        return {"batches": self._consumed}

    def element_spec(self) -> dict:
        """The batches' tf.TensorSpecs (a host with no batch of its own builds empty ones)."""
        return self._factory().element_spec

    def restore(self, state: Mapping) -> None:
        self._consumed = int(state["batches"])
        self._it = None


def make_iterator(data_cfg, split: str = "train", **kw) -> DataIterator:
    kw.setdefault("shuffle", data_cfg.shuffle)
    return DataIterator(lambda: build_dataset(data_cfg, split, **kw))
