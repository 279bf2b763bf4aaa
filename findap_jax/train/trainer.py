"""The trainer: one loop for every loss (CPT, SFT, joint CPT+IT, DPO, IPO, RPO).

config sections: model (what to start from), data (mixture, lengths), train (loss and
optimizer), run (mesh, checkpoints, logging, evaluation). Resumes from the latest
complete checkpoint in `workdir`, data position included.

Preemption: SIGTERM (what TPU VMs and SLURM send before they take a machine away)
during `run()` stops the loop after the current step, writes a checkpoint of that step,
waits until it is complete and raises `Preempted`, a SystemExit: `findap-jax train` (or
`recipe`) exits with status 75 (EX_TEMPFAIL, "run me again"), not 0, so neither a launcher
nor a pipeline around the trainer takes the run for finished. The same command run again
resumes from that step.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from findap_jax.checkpoints.loader import load_pretrained
from findap_jax.checkpoints.orbax_io import save_orbax
from findap_jax.compile_cache import use_compilation_cache
from findap_jax.config import to_json
from findap_jax.data.contamination import check, mixture_report
from findap_jax.data.pipeline import is_preference, make_iterator, register, resolve_name
from findap_jax.files import write_text_atomic
from findap_jax.parallel import make_mesh
from findap_jax.parallel.sharding import state_shardings
from findap_jax.train.checkpointing import Checkpointer, abstract_like, write_config
from findap_jax.train.metrics import peak_flops_per_device, train_flops_per_token
from findap_jax.train.optim import make_optimizer
from findap_jax.train.step import (PREF_LOSSES, batch_sharding, init_sharded_state, make_train_step,
                                   merge_model, split_model)


class DivergenceError(RuntimeError):
    pass


PREEMPTED_EXIT_CODE = 75   # EX_TEMPFAIL: stopped on purpose, checkpoint saved, rerun to resume


class Preempted(SystemExit):
    """Raised by Trainer.run after a SIGTERM once the checkpoint of `step` is saved. A
    SystemExit so that the process ends with PREEMPTED_EXIT_CODE (no traceback) unless a
    caller catches it; returning normally would let callers go on as if training were done."""

    def __init__(self, step: int):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step = step


def pad_rows(batch: dict, rows: int) -> dict:
    """Pad a short last batch with all-zero rows (segment 0, weight 0: they add nothing)."""
    n = len(next(iter(batch.values())))
    if n >= rows:
        return batch
    return {k: np.concatenate([v, np.zeros((rows - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


def check_workdir(workdir: str | os.PathLike) -> None:
    """Refuse to start when the workdir cannot be written (instead of failing at a save)."""
    if "://" in str(workdir):   # Path("gs://b/x") would silently become the local "gs:/b/x"
        raise ValueError(f"{workdir}: URL workdirs are not supported; mount the bucket (e.g. gcsfuse, "
                         "as launch/tpu_pod.sh does) and pass the local path")
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # One probe per process: hosts sharing a workdir must not delete each other's probe.
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_probe_") as probe:
            probe.write(b"x" * 4096)
            probe.flush()
    except OSError as e:
        raise OSError(f"{workdir}: work directory is not writable: {e.strerror}") from None


def tree_bytes(tree) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of a pytree."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def check_free_space(workdir: str | os.PathLike, needed: int) -> None:
    """Refuse to start when the workdir's disk has fewer than `needed` free bytes."""
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise OSError(f"{workdir}: not enough free disk space: {human_bytes(free)} free ({free} bytes), "
                      f"a checkpoint and the final export need about {human_bytes(needed)} ({needed} bytes); "
                      "free some space or set run.min_free_bytes (0 = no check)")


class StopSignal:
    """SIGTERM -> a flag the loop reads between steps (so the step, its data position and
    the checkpoint stay consistent). Installed only while run() goes, in the main thread."""

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum, self.requested, self._installed, self._previous = signum, False, False, None

    def __enter__(self):
        # signal.signal only works in the main thread; elsewhere SIGTERM keeps its old meaning.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._installed:
            # None: the old handler was not set from Python; the default is the best we can do.
            signal.signal(self.signum, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False
        return False

    def agreed(self) -> bool:
        """Whether any process got the signal. Every process must stop at the same step (the
        checkpoint save is collective), so with several processes the flags are combined;
        a single process reads its own flag without a collective."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.array([self.requested], np.int32))
        return bool(np.asarray(flags).any())


def _log_writer(workdir: Path):
    if jax.process_index() != 0:
        return None
    import tensorflow as tf
    return tf.summary.create_file_writer(str(workdir / "tensorboard"))


class Trainer:
    def __init__(self, cfg, workdir: str | os.PathLike, *, log=print):
        check_workdir(workdir)
        self.cfg, self.workdir, self.log = cfg, Path(workdir), log
        use_compilation_cache(cfg.run.compilation_cache)
        tc = cfg.train
        self.mesh = make_mesh(dict(cfg.run.mesh))
        dp = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if cfg.data.batch_size % (dp * tc.grad_accum):
            raise ValueError(f"data.batch_size={cfg.data.batch_size} must be a multiple of data x fsdp "
                             f"({dp}) x train.grad_accum ({tc.grad_accum})")
        rules = tuple(tuple(r) for r in cfg.run.rules) if cfg.run.rules else None
        m = cfg.model
        self.model, self.tokenizer = load_pretrained(
            m.path, dtype=m.dtype, param_dtype=m.param_dtype, mesh=self.mesh, rules=rules,
            remat=m.remat, chat_format=m.chat_format, attention=m.attention)
        if self.tokenizer.vocab_size > self.model.cfg.vocab_size:
            raise ValueError(f"{m.path}: tokenizer has {self.tokenizer.vocab_size} tokens but the "
                             f"model's vocab_size is {self.model.cfg.vocab_size}")
        register(cfg.data, self.tokenizer)
        if cfg.eval.every:   # a bad task name or file fails now, not hours into the run
            from findap_jax.eval.evaluate import parse_tasks
            from findap_jax.eval.tasks import resolve_files
            for _, task, _ in parse_tasks(cfg.eval.tasks):
                resolve_files(task, cfg.eval.data_dir, dict(cfg.eval.files).get(task.name))
        contamination = mixture_report(cfg.data)
        if contamination is not None:
            check(contamination, cfg.data.contamination.max_share)
        pref = is_preference(resolve_name(cfg.data.mixture))
        if pref != (tc.loss in PREF_LOSSES):
            raise ValueError(f"train.loss={tc.loss!r} does not fit data.mixture={cfg.data.mixture!r} "
                             f"({'preference pairs' if pref else 'LM rows'})")
        graphdef, params, rest = split_model(self.model)
        self.tx, self.schedule = make_optimizer(tc)
        self._check_free_space(params)
        self.param_shardings = state_shardings(params, self.mesh, rules)
        self.state, self.state_shardings = init_sharded_state(params, self.tx, self.mesh, self.param_shardings)
        self.ref_params, self.ref_table, self._step_shapes = None, None, set()
        in_shardings = (self.state_shardings, batch_sharding(self.mesh))
        if tc.loss in PREF_LOSSES:
            if tc.shared_row_multiple < 1:
                raise ValueError(f"train.shared_row_multiple={tc.shared_row_multiple}: must be >= 1")
            if tc.shared_prompt and m.attention == "splash":
                raise ValueError("train.shared_prompt=true needs a mask-based attention; model.attention=splash "
                                 "builds its own causal mask: set train.shared_prompt=false")
            if tc.reference == "live":
                # The frozen reference is the starting model, sharded like the policy, no optimizer.
                self.ref_params = jax.tree.map(jnp.copy, params)
                in_shardings += (self.param_shardings,)
            elif tc.reference == "precomputed":
                from findap_jax.eval.progress import model_fingerprint
                from findap_jax.train.reference import load_or_compute
                shard = (jax.process_index(), jax.process_count())
                multiple = tc.shared_row_multiple if tc.shared_prompt else 0
                fingerprint = (f"{model_fingerprint(m.path, m.dtype)}|{m.param_dtype}|seq_len={cfg.data.seq_len}"
                               f"|shard={shard}|shared_multiple={multiple}")
                with jax.set_mesh(self.mesh):
                    self.ref_table = load_or_compute(
                        self.workdir / f"reference_logps.{shard[0]}.json", self.model, cfg.data, shard,
                        multiple, fingerprint, log=log, mesh=self.mesh)
            else:
                raise ValueError(f"train.reference={tc.reference!r}: choose live or precomputed")
        step = make_train_step(graphdef, self.tx, self.schedule, tc, rest=rest)
        self.step_fn = jax.jit(step, in_shardings=in_shardings,
                               out_shardings=(self.state_shardings, None), donate_argnums=0)
        self.graphdef, self.rest = graphdef, rest
        self.data = make_iterator(cfg.data, "train")
        self.early_stop = dict(best=None, bad_evals=0, stopped=False)   # saved with checkpoints
        self.ckpt = Checkpointer(self.workdir, keep=cfg.run.keep, async_save=cfg.run.async_checkpoint,
                                 log=log)
        self.flops_per_token = train_flops_per_token(self.model.cfg, cfg.data.seq_len)
        if jax.process_index() == 0:
            write_config(self.workdir, to_json(cfg))

    def _check_free_space(self, params) -> None:
        """run.min_free_bytes < 0: this process's share of one checkpoint (params + optimizer
        state, sized without allocating it) and of the export, x1.2; 0: no check."""
        need = self.cfg.run.min_free_bytes
        if need < 0:
            ckpt = tree_bytes(params) + tree_bytes(jax.eval_shape(self.tx.init, params))
            export = tree_bytes(params) if self.cfg.run.export_final else 0
            need = int(1.2 * (ckpt + export) / jax.process_count())
        if need:
            check_free_space(self.workdir, need)

    # ------------------------------------------------------------------------------
    def restore_latest(self) -> int:
        step = self.ckpt.latest_step()
        if step is None:
            return 0
        self.state, data_state = self.ckpt.restore(step, abstract_like(self.state))
        self.data.restore(data_state)
        self.early_stop = dict(data_state.get("early_stop", self.early_stop))
        self.log(f"resumed from step {step} ({self.ckpt.dir / str(step)})")
        return step

    def _data_state(self) -> dict:
        """What a checkpoint keeps besides the train state: the input position and the early
        stopping record, so a resumed run stops (or goes on) as the uninterrupted one would."""
        return {**self.data.state(), "early_stop": dict(self.early_stop)}

    def _global_batch(self, batch):
        sharding = batch_sharding(self.mesh)
        return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}

    def _share_prompts(self, batch: dict) -> dict:
        """A preference batch as prompt-shared rows (train.shared_prompt) when that saves
        work, with one row length agreed by every process (the longest any host's pairs
        need) and, with train.pack_pairs, one row count (the most any host's pairs take,
        rounded up so that every micro-batch splits over the mesh's batch shards)."""
        from findap_jax.train.shared_prompt import pair_needs, plan_rows, share_prompts, shared_length, worth_sharing
        tc = self.cfg.train
        length = self._agreed_max(shared_length(batch, tc.shared_row_multiple))
        b = len(batch["chosen_input_tokens"])
        plan = plan_rows(pair_needs(batch), length, tc.pack_pairs)
        unit = self._row_unit(b)
        count = min(b, self._agreed_max(-(-len(plan) // unit) * unit))
        if worth_sharing(batch, length, count):
            batch = share_prompts(batch, length, plan, count)
            shape = (count * jax.process_count(), length)   # the global batch's rows
        else:
            shape = "separate"
        if shape not in self._step_shapes:   # each new shape compiles the step once
            self._step_shapes.add(shape)
            kind = "separate" if shape == "separate" else f"prompt-shared, {shape[0]} rows of {shape[1]} tokens"
            self.log(f"preference rows: {kind} (step shape {len(self._step_shapes)}; a new shape compiles the step)")
        return batch

    def _row_unit(self, rows: int) -> int:
        """This host's row counts must be multiples of this: grad_accum micro-batches, each
        split over the mesh's batch shards. Where that does not divide this host's `rows`
        pairs, it is `rows` itself: one row per pair, nothing packed."""
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        need = self.cfg.train.grad_accum * shards
        unit = need // jax.process_count() if need % jax.process_count() == 0 else rows
        return unit if unit and rows % unit == 0 else rows

    @staticmethod
    def _agreed_max(value: int) -> int:
        if jax.process_count() == 1:
            return value
        from jax.experimental import multihost_utils
        return int(np.max(multihost_utils.process_allgather(np.int32(value))))

    def _count_tokens(self, batch) -> int:
        """Real (non-padding) tokens of an LM, preference or prompt-shared preference batch."""
        for key in ("segment_ids", "shared_segment_ids"):
            if key in batch:
                return int((batch[key] > 0).sum())
        return int((batch["chosen_segment_ids"] > 0).sum() + (batch["rejected_segment_ids"] > 0).sum())

    def eval_loss(self) -> float | None:
        """Mean dev loss (token-weighted) over the validation split, if the mixture has one."""
        cfg = self.cfg
        if cfg.train.loss in PREF_LOSSES:
            return None
        from findap_jax.train.losses import cross_entropy
        try:
            it = make_iterator(cfg.data, "validation", num_epochs=1, shuffle=False,
                               mixture=cfg.run.eval_mixture or None, drop_remainder=False)
        except ValueError:
            return None
        model = merge_model(self.graphdef, self.state.params, self.rest)

        @nnx.jit
        def sums(m, b):
            logits = m(b["input_tokens"], positions=b["positions"], segment_ids=b["segment_ids"])
            loss, met = cross_entropy(logits, b["target_tokens"], b["loss_weights"])
            return loss * met["tokens"], met["tokens"]

        rows = cfg.data.batch_size // jax.process_count()
        batches = []
        for batch in it:
            if cfg.run.eval_batches and len(batches) >= cfg.run.eval_batches:
                break
            batches.append(pad_rows(batch, rows))
        if jax.process_count() > 1:   # every batch is a collective: hosts run the same count
            from jax.experimental import multihost_utils
            n = int(np.max(multihost_utils.process_allgather(np.int32(len(batches)))))
            spec = it.element_spec()
            empty = {k: np.zeros((rows,) + tuple(cfg.data.seq_len if d is None else d for d in s.shape[1:]),
                                 s.dtype.as_numpy_dtype) for k, s in spec.items()}
            batches += [empty] * (n - len(batches))   # weight 0: they add nothing
        total = weight = 0.0
        with jax.set_mesh(self.mesh):
            for batch in batches:
                s, w = sums(model, self._global_batch(batch))
                total, weight = total + float(s), weight + float(w)
        return total / weight if weight else None

    def eval_tasks(self, step: int, writer) -> dict:
        """FinEval tasks (cfg.eval) on the live model; outputs in workdir/eval/step_N/.
        Returns {"eval/<task>/<metric>": value} for the primary metrics."""
        from findap_jax.eval.evaluate import evaluate_model, write_outputs
        model = merge_model(self.graphdef, self.state.params, self.rest)
        results, preds = evaluate_model(model, self.tokenizer, self.cfg.eval, mesh=self.mesh,
                                        log=lambda m: self.log(f"step {step}: {m}"))
        out = {f"eval/{k}/{r['primary']}": float(r[r["primary"]]) for k, r in results.items()}
        if jax.process_index() == 0:
            write_outputs(self.workdir / "eval" / f"step_{step}", results, preds)
            if writer is not None:
                import tensorflow as tf
                with writer.as_default():
                    for k, v in out.items():
                        tf.summary.scalar(k, v, step=step)
        return out

    def run(self) -> list[dict]:
        """Train to cfg.train.steps (or early stop); returns the per-step metrics. Raises
        Preempted (a SystemExit) after saving a checkpoint when a SIGTERM cut the run short."""
        with StopSignal() as stop:
            return self._run(stop)

    def _run(self, stop: StopSignal) -> list[dict]:
        tc, run = self.cfg.train, self.cfg.run
        preempted = False
        start = self.restore_latest()
        self._trim_metrics(start)
        writer = _log_writer(self.workdir)
        history: list[dict] = []
        nonfinite = 0
        peak = peak_flops_per_device() * jax.device_count()
        step = start
        if self.early_stop["stopped"]:
            self.log(f"early-stopped at step {step} already: not training further")
        with jax.set_mesh(self.mesh):
            while step < tc.steps and not self.early_stop["stopped"]:
                if stop.agreed():
                    preempted = True
                    self.log(f"SIGTERM: stopping at step {step} of {tc.steps} to save a checkpoint")
                    break
                batch = next(self.data)
                if self.ref_table is not None:
                    from findap_jax.train.reference import attach
                    batch = attach(batch, self.ref_table)
                tokens = self._count_tokens(batch) * jax.process_count()
                if tc.loss in PREF_LOSSES and tc.shared_prompt:
                    batch = self._share_prompts(batch)
                computed = self._count_tokens(batch) * jax.process_count()   # what the step runs
                t0 = time.perf_counter()
                args = (self.state, self._global_batch(batch))
                if self.ref_params is not None:
                    args += (self.ref_params,)
                self.state, metrics = self.step_fn(*args)
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                dt = time.perf_counter() - t0
                if not metrics.pop("finite"):
                    nonfinite += 1
                    self.log(f"step {step + 1}: non-finite loss or gradient, update skipped "
                             f"({nonfinite}/{run.max_nonfinite})")
                    if nonfinite >= run.max_nonfinite:
                        self.ckpt.wait()
                        raise DivergenceError(
                            f"{nonfinite} non-finite steps; stopping. The last good checkpoint is "
                            f"step {self.ckpt.latest_step()} in {self.ckpt.dir}")
                    continue
                step += 1
                metrics.update(step=step, step_time=dt, tokens_per_s=tokens / dt,
                               mfu=computed * self.flops_per_token / dt / peak)
                if self.cfg.eval.every and step % self.cfg.eval.every == 0:
                    metrics.update(self.eval_tasks(step, writer))
                if run.eval_every and step % run.eval_every == 0:
                    self._dev_eval(step, metrics, writer)
                history.append(metrics)
                self._append_metrics(metrics)
                if step % run.log_every == 0 or step == tc.steps:
                    self._log(metrics, writer)
                if run.checkpoint_every and step % run.checkpoint_every == 0:
                    self.ckpt.save(step, self.state, self._data_state())
        if self.ckpt.latest_step() != step:
            self.ckpt.save(step, self.state, self._data_state(), force=True)
        self.ckpt.close()   # waits for async saves: the checkpoint is complete on return
        if preempted:
            self.log(f"SIGTERM: checkpoint of step {step} saved in {self.ckpt.dir / str(step)}; "
                     f"exiting with status {PREEMPTED_EXIT_CODE}, run the same command again to resume")
            raise Preempted(step)
        if run.export_final:
            self.export(self.workdir / "final")
        return history

    def _dev_eval(self, step: int, metrics: dict, writer) -> None:
        """Dev loss into this step's metrics; early stopping after `run.patience` evals
        without a new best."""
        dev = self.eval_loss()
        if dev is None:
            return
        metrics["dev_loss"] = dev
        self.log(f"step {step}: dev loss {dev:.4f}")
        if writer is not None:
            import tensorflow as tf
            with writer.as_default():
                tf.summary.scalar("dev/loss", dev, step=step)
        es = self.early_stop
        if es["best"] is None or dev < es["best"] - 1e-6:
            es.update(best=dev, bad_evals=0)
        else:
            es["bad_evals"] += 1
            if self.cfg.run.patience and es["bad_evals"] >= self.cfg.run.patience:
                es["stopped"] = True
                self.log(f"early stop at step {step}: dev loss stopped falling")

    def export(self, dst: Path) -> Path:
        model = merge_model(self.graphdef, self.state.params, self.rest)
        return save_orbax(model, dst, tokenizer=self.tokenizer)

    def _trim_metrics(self, start: int) -> None:
        """Keep one metrics.jsonl line per step <= start: a run killed after its last checkpoint
        left lines (maybe a torn one) for steps that this run computes again."""
        path = self.workdir / "metrics.jsonl"
        if jax.process_index() != 0 or not path.exists():
            return
        text = path.read_text(errors="replace")
        kept = {}
        for line in text.splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if isinstance(m, dict) and isinstance(m.get("step"), int) and 0 < m["step"] <= start:
                kept[m["step"]] = line
        new = "".join(kept[k] + "\n" for k in sorted(kept))
        if new != text:
            write_text_atomic(path, new)

    def _append_metrics(self, m: dict) -> None:
        """One JSON line per step in workdir/metrics.jsonl (process 0), flushed each step."""
        if jax.process_index() == 0:
            with open(self.workdir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(m) + "\n")

    def _log(self, m: dict, writer) -> None:
        keys = [k for k in ("loss", "accuracy", "rewards/accuracies", "rewards/margins", "grad_norm", "lr")
                if k in m]
        body = "  ".join(f"{k} {m[k]:.4g}" for k in keys)
        self.log(f"step {m['step']:>6}  {body}  {m['tokens_per_s']:.0f} tok/s  mfu {m['mfu']:.3f}")
        if writer is not None:
            import tensorflow as tf
            with writer.as_default():
                for k, v in m.items():
                    if k != "step":
                        tf.summary.scalar(f"train/{k}", v, step=m["step"])
            writer.flush()
