"""`findap-jax data inspect`: what a data config really feeds the trainer.

Prints per-task counts (records, examples, tokens, loss tokens, dropped, skipped), the
mixture shares realised over N examples next to the configured rates, loss-mask
coverage of the packed rows, and a few decoded rows with the trained spans marked.
"""
from __future__ import annotations

import collections

import numpy as np
import seqio

from findap_jax.data.pipeline import build_dataset, is_preference, register, resolve_name, task_specs
from findap_jax.data.registry import PREFIX
from findap_jax.data.tasks import TaskStats, iter_examples, task_id

TRAIN_OPEN, TRAIN_CLOSE = "«", "»"


def show_row(tokenizer, tokens, weights, segments) -> str:
    """Decode a row; text the loss is computed on is wrapped in «...»."""
    out, run, run_w = [], [], None
    n = int((segments > 0).sum())
    # weight[i] belongs to target token i+1; mark the token that is learned
    learned = np.concatenate([[0], weights[:-1]])[:n]
    for tok, w in zip(tokens[:n], learned):
        if run and w != run_w:
            text = tokenizer.decode(run, skip_special_tokens=False)
            out.append(f"{TRAIN_OPEN}{text}{TRAIN_CLOSE}" if run_w else text)
            run = []
        run.append(int(tok))
        run_w = w
    if run:
        text = tokenizer.decode(run, skip_special_tokens=False)
        out.append(f"{TRAIN_OPEN}{text}{TRAIN_CLOSE}" if run_w else text)
    return "".join(out)


def inspect(cfg, tokenizer, *, examples: int = 2000, batches: int = 20, rows: int = 2,
            split: str = "train", out=print) -> dict:
    data = cfg.data
    register(data, tokenizer)
    report: dict = {"tasks": {}, "shares": {}, "rates": {}}
    out(f"== tasks (split {split!r}, seq_len {data.seq_len})")
    out(f"{'task':28} {'records':>8} {'examples':>9} {'tokens':>10} {'loss tok':>9} {'too long':>9} {'skipped':>8}")
    for name, spec in task_specs(data).items():
        if split not in spec.files:
            continue
        st = TaskStats()
        for _ in iter_examples(spec, split, tokenizer, data.seq_len, data.on_bad_record, st):
            pass
        report["tasks"][PREFIX + name] = dict(records=st.records, examples=st.examples, tokens=st.tokens,
                                             loss_tokens=st.loss_tokens, too_long=st.too_long,
                                             skipped=st.skipped.total)
        out(f"{PREFIX + name:28} {st.records:8d} {st.examples:9d} {st.tokens:10d} "
            f"{st.loss_tokens:9d} {st.too_long:9d} {st.skipped.total:8d}")
        for line in st.skipped.examples[:3]:
            out(f"    skipped {line}")

    from findap_jax.data.contamination import format_report, mixture_report
    contamination = mixture_report(data, all_tasks=True)
    if contamination is not None:
        report["contamination"] = contamination
        out(f"\n== {data.contamination.n}-gram overlap with eval tasks ({data.contamination.eval_tasks})")
        out(format_report(contamination))

    name = resolve_name(data.mixture)
    mix = seqio.get_mixture_or_task(name)
    if isinstance(mix, seqio.Mixture):
        ids = {task_id(t.name): t.name for t in mix.tasks}
        feats = {k: data.seq_len for k in mix.tasks[0].output_features if k != "task_id"}
        ds = mix.get_dataset(feats, split=split, shuffle=True, seed=data.seed, num_epochs=None)
        counts = collections.Counter(ids[int(e["task_id"])] for e in ds.take(examples).as_numpy_iterator())
        total_rate = sum(mix.get_rate(t) for t in mix.tasks)
        out(f"\n== mixture {name}: realised shares over {examples} examples")
        for t in mix.tasks:
            rate = mix.get_rate(t) / total_rate
            share = counts[t.name] / examples
            report["shares"][t.name], report["rates"][t.name] = share, rate
            out(f"{t.name:28} configured {rate:6.3f}  realised {share:6.3f}")

    if not is_preference(name):
        ds = build_dataset(data, split, shard=(0, 1))
        w_sum = tok_sum = cells = 0
        shown = 0
        out(f"\n== packed rows ({batches} batches of {data.batch_size}, length {data.seq_len})")
        for batch in ds.take(batches).as_numpy_iterator():
            w_sum += int(batch["loss_weights"].sum())
            tok_sum += int((batch["segment_ids"] > 0).sum())
            cells += batch["segment_ids"].size
            for i in range(len(batch["input_tokens"])):
                if shown < rows:
                    shown += 1
                    out(f"--- row {shown} ({int(batch['segment_ids'][i].max())} segments); "
                        f"trained text in {TRAIN_OPEN}...{TRAIN_CLOSE}")
                    out(show_row(tokenizer, batch["input_tokens"][i], batch["loss_weights"][i],
                                 batch["segment_ids"][i]))
        report["fill"] = tok_sum / max(cells, 1)
        report["loss_coverage"] = w_sum / max(tok_sum, 1)
        out(f"\nrow fill {report['fill']:.3f} (non-padding tokens / cells); "
            f"loss-mask coverage {report['loss_coverage']:.3f} (trained targets / tokens)")
    return report
