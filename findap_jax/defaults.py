"""Default config sections that the files in configs/ compose and override."""
from __future__ import annotations

import ml_collections

from findap_jax.config import lock_schema


def model_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        path="smollm2",      # HF dir, .gguf, orbax export; "smollm2" = SmolLM2-135M-Instruct from PyPI
        dtype="float32",     # compute dtype
        param_dtype="float32",
        chat_format=ml_collections.FieldReference(None, field_type=str),
        remat="none",        # none, full, dots, dots_no_batch
        attention="xla",     # xla (blocked causal), reference, dot_product_attention (cuDNN on GPU in bf16), splash (TPU Pallas)
    ))


def data_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        mixture="findap_joint",   # a registered mixture or task name
        seq_len=512,
        batch_size=8,             # global batch (rows); each host reads batch_size / process_count
        pack=True,
        shuffle=True,
        seed=42,
        on_bad_record="raise",    # or "skip" (counted and reported)
        data_dir="",              # root of the task files; "" = the bundled corpora
        cache_in_memory=True,     # keep tokenised examples in RAM after the first epoch
        joint=dict(cpt_rate=0.5, cpt_finance_share=0.5, it_finance_share=0.2),
        # Extra or replacement tasks: {name: {"kind": "cpt"|"chat"|"preference",
        #                                     "train": glob(s), "validation": glob(s)}}
        tasks=ml_collections.ConfigDict(),
        # {task or mixture: rate} registers the mixture "custom" (use mixture="custom")
        rates=ml_collections.ConfigDict(),
        # Refuse to train when a training task shares word n-grams with more than max_share
        # of an eval task's rows ("" = no check); `findap-jax data inspect` prints the table.
        contamination=dict(eval_tasks="fpb,cfa_mini,finqa_mini", n=13, max_share=0.0),
    ))


def train_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        loss="lm",                # lm (CPT/SFT/joint), dpo, ipo, rpo
        steps=100,
        lr=5e-6,
        warmup=0.1,               # fraction of steps (< 1) or a step count
        schedule="cosine",        # cosine, linear, constant
        end_lr_ratio=0.0,
        weight_decay=0.1,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        max_grad_norm=1.0,
        grad_accum=1,
        z_loss=0.0,
        label_smoothing=0.0,
        per_sequence=False,       # CE as the mean of per-document means
        ce_chunk=0,               # output head + CE this many positions per row at a time, logits
                                  # recomputed in the backward pass (0: whole rows, kept)
        head_chunk=256,           # head + CE only on loss-weighted positions, this many per batch
                                  # shard at a time, chunks without any skipped (0: every position)
        beta=0.1,                 # DPO/IPO/RPO
        alpha=1.0,                # RPO: weight of the chosen NLL
        reference="live",         # live (frozen copy) or precomputed (log-prob pass first)
        shared_prompt=True,       # DPO/IPO/RPO: a pair's prompt computed once, its answers as two
                                  # branches of one row (train/shared_prompt.py); false with splash
        shared_row_multiple=64,   # prompt-shared rows are padded to a multiple of this (one compile each)
        pack_pairs=True,          # pairs that fit share a prompt-shared row (a batch's B pairs in fewer
                                  # rows; each new row count compiles the step once)
        seed=0,
    ))


def run_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        mesh=dict(data=1, fsdp=-1, tensor=1),   # -1 takes the remaining devices
        rules=ml_collections.FieldReference(None, field_type=list),  # None = parallel.DEFAULT_RULES
        checkpoint_every=100,
        keep=3,                   # checkpoints kept (0 = all)
        async_checkpoint=True,
        log_every=10,
        eval_every=0,             # steps between dev-loss evaluations (0 = never)
        eval_batches=20,
        eval_mixture="",          # "" = the training mixture's validation split
        patience=1,               # early stop after this many evals without improvement (0 = off)
        max_nonfinite=3,          # stop after this many skipped non-finite steps
        export_final=True,        # write workdir/final (orbax export + tokenizer)
        min_free_bytes=-1,        # refuse to start with less free disk (-1: ~1 checkpoint + export, 0: off)
        compilation_cache="",     # a directory (relative: to the current one; shared by all hosts):
                                  # compiled steps persist across runs and restarts
                                  # ("": JAX_COMPILATION_CACHE_DIR or none; findap_jax/compile_cache.py)
        coordinator="",           # multi-host: coordinator address (empty: env or TPU auto)
        num_processes=0,
        process_id=-1,
    ))


def experiment_config(**sections) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(dict(
        model=model_config(), data=data_config(), train=train_config(), run=run_config(),
        # FinEval tasks run on the live model every `every` steps (0 = never); results go to
        # workdir/eval/step_N/ and TensorBoard
        # a seeded sample: the first rows of a file need not have its label mix (FPB's first
        # 100 are 75% positive against 29% overall)
        eval=eval_tasks_config(every=0, tasks="fpb", limit=100, sample_seed=0)))
    lock_schema(cfg)
    for name, values in sections.items():
        if name not in cfg:
            raise KeyError(f"experiment_config: unknown section {name!r}; known {sorted(cfg)}")
        cfg[name].update(values)   # locked: an unknown key is an error naming its near matches
    return cfg


def eval_tasks_config(**overrides) -> ml_collections.ConfigDict:
    """Which eval tasks and how to score them; shared by `findap-jax eval` and the trainer's
    periodic evaluation (section `eval` of an experiment config)."""
    cfg = ml_collections.ConfigDict(dict(
        tasks="fpb,cfa_mini,finqa_mini",  # comma list; "task:loglik" / "task:generate" picks a mode
        limit=0,                  # first N rows of each task (0 = all)
        sample_seed=-1,           # >= 0: a seeded random sample of `limit` rows instead of the first
        data_dir="",              # root the tasks' relative files resolve against ("" = bundled)
        files=ml_collections.ConfigDict(),  # {task: glob} replaces a task's files
        chat=True,                # prompts as one chat-templated user turn
        system=ml_collections.FieldReference(None, field_type=str),  # None = task default
        batch_size=16,            # generation: prompts per batch
        rows_per_batch=8,         # log-likelihood: packed rows per batch
        row_len=256,              # log-likelihood: tokens per packed row (longer prompts get their own)
        max_new_tokens=0,         # 0 = the task's own budget
        judge="",                 # judge mode ("financebench:judge"): the grading model, any
                                  # load_pretrained path ("" = the evaluated model itself)
    ))
    cfg.update(overrides)   # may add keys (the trainer's `every`): the builders that use it lock
    return cfg


def eval_config() -> ml_collections.ConfigDict:
    """`findap-jax eval`: which model, which tasks (name or name:mode), where outputs go."""
    cfg = eval_tasks_config()
    cfg.update(dict(
        model="smollm2",          # HF dir, .gguf, orbax export, or a `findap-jax train` workdir
        dtype="float32",
        chat_format=ml_collections.FieldReference(None, field_type=str),
        output_dir="",            # results.json, predictions/, report.md (required)
        compare="",               # comma list of other eval dirs to chart against this one
        mesh=dict(data=1, fsdp=-1, tensor=1),
    ))
    return lock_schema(cfg)


def distill_config() -> ml_collections.ConfigDict:
    """`findap-jax distill`: GenRM preference distillation (FAP + SCP) on CFA-style exercises."""
    return lock_schema(ml_collections.ConfigDict(dict(
        policy="smollm2",         # the model that writes trajectories (any load_pretrained path)
        judge="",                 # the generative reward model ("" = the policy itself)
        dtype="float32",
        chat_format=ml_collections.FieldReference(None, field_type=str),
        exercises="",             # CFA-style records (glob); "" = the bundled exercises
        output="",                # preference jsonl (required); .progress.jsonl and .stats.json beside it
        limit=0,                  # first N exercises (0 = all)
        k=4,                      # trajectories per exercise
        temperature=0.7,
        top_p=0.95,
        seed=0,
        max_new_tokens=384,       # per trajectory
        judge_max_new_tokens=256,
        retries=2,                # extra judge attempts for an unparseable reply
        verdict="judge",          # judge | rule (reference letter) | both (must agree)
        max_fap_pairs=4,          # per exercise
        scp=True,                 # also ask for stepwise corrections of wrong trajectories (SCP pairs)
        batch_size=16,            # judge prompts per generation batch
        exercises_per_batch=4,    # exercises sampled together (decode batch = this x k) and judged together
    )))
