"""The FinDAP recipe at the paper's settings: Llama-3-8B-Instruct -> Llama-Fin.

    findap-jax recipe --config=configs/recipes/findap_llama3_8b.py:tpu --workdir DIR \
        --config.model=/path/to/Meta-Llama-3-8B-Instruct \
        --config.cpt_it.data.data_dir=/data/fintrain --config.cpt_it_2.data.data_dir=/data/fintrain

Argument: "tpu" (default; a v5p-64 slice = 32 chips, mesh data=1 x fsdp=16 x tensor=2) or
"gpu" (16 GPUs, the paper's 16xA100: fsdp=16). Launchers: launch/tpu_pod.sh, launch/slurm_gpu.sbatch.

Stage 1a (cpt_it): joint CPT+IT, 50% CPT (50% finance text) / 50% IT (20% finance tasks),
8,000-token packed rows, 16 rows = 128K tokens per step, LR 5e-6 with 10% warmup, AdamW
(wd 0.1, betas 0.9/0.95), 3.84B tokens. Stage 1b (cpt_it_2): the same, 50% warmup, 1.66B
tokens; the paper adds finance books (CPT) and exercises drawn from them (IT) to the stage 1a
data, e.g. --config.cpt_it_2.data.tasks="{'finance_cpt': {'train': ['/data/fintrain/finance_cpt/*.jsonl', '/data/books/*.jsonl']}}".
Stage 2: FAP + SCP pairs distilled from the stage-1 model (pass a judge with
--config.distill.judge=PATH and the CFA exercises with --config.distill.exercises=GLOB), then
RPO (DPO beta 0.1 + 1.0 x NLL of the chosen answer) at LR 5e-7, 10% warmup, 2,048-token
pairs, 16 pairs = 32K tokens per step, 24.6M tokens, distilled pairs only.

Training data: data.data_dir "" means the small bundled corpora (smoke runs only); for the
real run point both stage-1 sections at FinTrain laid out like findap_jax/data/bundled
(finance_cpt/, general_cpt/, finance_it/, general_it/ with *.jsonl).
"""
import math

from findap_jax.recipe import recipe_config

SEQ_LEN = 8000                 # stage 1: packed rows of 8,000 tokens
ROWS = 16                      # 16 x 8,000 = 128,000 tokens per step ("128K")
PA_LEN = 2048                  # stage 2: max length of prompt + answer
PA_PAIRS = 16                  # 16 x 2,048 = 32,768 tokens per step ("32K")

# Steps from the paper's token counts (Table: stage 1a 3.84B, stage 1b 1.66B, PA 24.6M):
#   1a: 3.84e9 / 128,000 = 30,000    1b: 1.66e9 / 128,000 = 12,968.75 -> 12,969
#   PA: 24.6e6 / 32,768 = 750.7 -> 751
# The paper stops when the dev loss stops falling (~1 epoch): run.eval_every/patience below
# stop stage 1 early; these step counts are the upper bound (and set the LR schedule).
STEPS_1A = math.ceil(3_840_000_000 / (ROWS * SEQ_LEN))
STEPS_1B = math.ceil(1_660_000_000 / (ROWS * SEQ_LEN))
STEPS_PA = math.ceil(24_600_000 / (PA_PAIRS * PA_LEN))

MESHES = {
    # v5p-64: 32 chips on 8 hosts. 16 rows split over data x fsdp = 16 (one row per shard,
    # 2 rows per host); tensor=2 splits the 32 query / 8 KV heads of Llama-3-8B in two.
    "tpu": dict(data=1, fsdp=16, tensor=2),
    # 16 GPUs (e.g. 2 nodes x 8 A100/H100), fully sharded as in the paper.
    "gpu": dict(data=1, fsdp=16, tensor=1),
}

# Attention: the Pallas Splash kernel on TPU (block-sparse causal over 8,000-token packed
# rows, no [T, T] mask built); the XLA blocked attention on GPU (cuDNN through
# dot_product_attention is not verified here with packed-document masks).
ATTENTION = {"tpu": "splash", "gpu": "xla"}

MODEL = dict(
    path="",                   # set by the recipe from cfg.model (the previous stage's export)
    dtype="bfloat16",          # bf16 compute
    param_dtype="float32",     # fp32 master parameters and optimizer state
    remat="full",              # recompute each layer in the backward pass (8K-token rows)
)
# ce_chunk: the 128K-vocab head + CE 1,024 positions at a time: whole rows would hold
# 8,000 x 128,256 fp32 logits (4.1 GB per row, and as much again for their gradient).
OPTIMIZER = dict(lr=5e-6, weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0,
                 schedule="cosine", end_lr_ratio=0.0, grad_accum=1, ce_chunk=1024)


def _stage1(section, steps: int, warmup: float, attention: str) -> None:
    section.model.update(MODEL, attention=attention)
    section.data.update(mixture="findap_joint", seq_len=SEQ_LEN, batch_size=ROWS, pack=True,
                        data_dir="",   # "" = bundled toy corpora; pass FinTrain for the real run
                        joint=dict(cpt_rate=0.5, cpt_finance_share=0.5, it_finance_share=0.2))
    section.train.update(loss="lm", steps=steps, warmup=warmup, **OPTIMIZER)
    # Dev loss on the finance IT validation split every ~128M tokens; stop after two evals
    # without improvement (the paper: "dev loss stops falling").
    section.run.update(eval_every=1000, eval_batches=20, eval_mixture="findap_finance_it",
                       patience=2, checkpoint_every=500, keep=2, log_every=10)


def get_config(arg=None):
    hardware = arg or "tpu"
    if hardware not in MESHES:
        raise ValueError(f"findap_llama3_8b: argument must be one of {sorted(MESHES)}, got {arg!r}")
    cfg = recipe_config()
    # Required: the base model, e.g. --config.model=/path/to/Meta-Llama-3-8B-Instruct
    # (an HF directory with safetensors + tokenizer, as downloaded from the Hub).
    cfg.model = ""
    cfg.stages = "cpt_it,cpt_it_2,distill,rpo"
    cfg.mesh = MESHES[hardware]
    cfg.eval_before = True
    # All bundled FinEval-style tasks, every row, zero-shot, chat template.
    cfg.eval.update(tasks="fpb,cfa_mini,finqa_mini,tweets_sentiment,finner,mmlu_finance,tatqa,finqa",
                    limit=0, batch_size=32)

    _stage1(cfg.cpt_it, STEPS_1A, warmup=0.1, attention=ATTENTION[hardware])
    _stage1(cfg.cpt_it_2, STEPS_1B, warmup=0.5, attention=ATTENTION[hardware])

    # Preference distillation from the stage-1 model (cfg.distill.policy is set by the recipe).
    cfg.distill.update(
        judge="",              # "" = the stage-1 model judges itself; the paper used GPT-4o as GenRM
        dtype="bfloat16",
        exercises="",          # "" = the bundled CFA-style set; the paper used ~32K CFA exercises
        verdict="judge",       # the paper's GenRM verdict ("both" also requires the rule check to agree)
        k=4, temperature=0.7, top_p=0.95, max_new_tokens=1024, judge_max_new_tokens=512,
        batch_size=32)

    rpo = cfg.rpo
    rpo.model.update(MODEL, attention=ATTENTION[hardware])
    rpo.data.update(mixture="findap_preference", seq_len=PA_LEN, batch_size=PA_PAIRS, pack=False)
    # Splash builds its own causal mask, so on TPU the pairs run as separate rows; elsewhere
    # each pair's prompt runs once (train.shared_prompt).
    rpo.train.update(loss="rpo", steps=STEPS_PA, warmup=0.1, beta=0.1, alpha=1.0,
                     reference="live", shared_prompt=hardware != "tpu", **dict(OPTIMIZER, lr=5e-7))
    # No dev-loss early stop here: the trainer computes dev loss for LM losses only.
    rpo.run.update(eval_every=0, checkpoint_every=100, keep=2, log_every=10)
    cfg.distilled_share = 1.0   # distilled pairs only: general pairs in PA are unnecessary
    cfg.general_pairs = ""      # fail rather than fall back to the toy pairs if none were distilled
    return cfg
