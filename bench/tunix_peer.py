"""Train-step throughput of the Tunix peer (google-tunix's SFT and DPO trainers) beside findap-jax, same process.

    make bench-tunix    # or: .venv-tunix/bin/python bench/tunix_peer.py [--preset smollm2-135m] [--seq 512]
                        #     [--batch 4] [--steps 3] [--prompt 1] [--kinds lm,dpo] [--skip-ours] [--tiny]
                        #     [--json FILE]

Tunix 0.1.7 pins safetensors<0.8 (and so an older transformers and huggingface_hub) and would downgrade
the project venv, so `make bench-tunix` gives it its own venv (.venv-tunix) with the project's
jax/jaxlib/flax/optax/orbax versions. findap-jax is imported from this checkout (its model and train
step need no torch); the script also runs in the project venv if tunix is installed there.

Random weights of the preset's shapes in Tunix's own Llama3 model (fp32; every matrix re-drawn normal with std 0.02
as ours, Tunix draws its MLP as zeros), the optimizer of bench/train_step.py (findap-jax make_optimizer:
clip 1.0 + AdamW lr 1e-5, betas 0.9/0.95, wd 0.1 on matrices), a fixed batch of random tokens, no padding.
Tunix SFT/CPT step = PeftTrainer's own jitted train step (full-parameter, its default masked NLL over
seq-1 targets; positions and causal mask built inside the step as tunix/cli/peft_main.py does). Tunix DPO
step = what DPOTrainer.train runs per step: `_prepare_inputs` (chosen/rejected concatenation, masks and the
frozen reference model's log-probs, a separate jit) then its jitted train step; prompt of --prompt tokens,
responses of seq-prompt tokens, so each sequence is seq tokens and seq-1 are scored, as ours. Tokens
counted as bench/train_step.py: SFT batch*seq, DPO 2*batch*seq. The two stacks' steps alternate as in
bench/train_step.py (`timing.interleaved_times`: one warm-up call each, then --steps rounds in which each
stack runs a settle step and a timed step); medians, and the median of the per-round ratios.
`--kinds dpo` runs the DPO leg alone: after the SFT leg, its four models and moments did not fit
a 23 GiB machine in session 23 (the process was killed), so run the legs as separate processes there.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # findap_jax of this checkout
from results import append_record  # bench/results.py, bench/timing.py (the script's folder is on sys.path)
from timing import interleaved_times

from findap_jax import defaults
from findap_jax.host_malloc import reexec_with_host_malloc
from findap_jax.model import get_preset
from findap_jax.train.optim import make_optimizer

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=16)


def optimizer():
    """The exact optax chain `ours` in bench/train_step.py builds."""
    tc = defaults.train_config()
    tc.update(dict(steps=1000, warmup=0, schedule="constant", lr=1e-5))
    return make_optimizer(tc)[0]


def tunix_model(cfg, seed=0):
    from tunix.models.llama3 import model as llama3
    mc = llama3.ModelConfig(num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.hidden_size,
                            hidden_dim=cfg.intermediate_size, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
                            num_kv_heads=cfg.num_kv_heads, rope_theta=int(cfg.rope_theta),
                            norm_eps=cfg.rms_norm_eps, weight_tying=cfg.tie_word_embeddings)
    model = llama3.Llama3(mc, rngs=nnx.Rngs(seed))
    key = jax.random.key(seed)
    for i, (_, var) in enumerate(nnx.iter_graph(model)):
        if isinstance(var, nnx.Param) and var.get_value().ndim >= 2:
            var.set_value(0.02 * jax.random.normal(jax.random.fold_in(key, i), var.get_value().shape, jnp.float32))
    return model


def tokens(rng, b, n, vocab):
    return jnp.asarray(rng.integers(1, vocab, (b, n)).astype(np.int32))


def runner(step, example_fn):
    """One Tunix train step (with its per-step input preparation) as a callable."""
    def run():
        loss, _, _ = step(example_fn())
        jax.block_until_ready(loss)
    return run


def tunix_sft(cfg, b, n):
    from tunix.sft import peft_trainer, utils
    trainer = peft_trainer.PeftTrainer(tunix_model(cfg), optimizer(),
                                       peft_trainer.TrainingConfig(eval_every_n_steps=10**9, max_steps=10**9))

    def model_inputs(x):  # runs inside the jitted step
        mask = x.input_mask.astype(bool)
        return dict(input_tokens=x.input_tokens, input_mask=x.input_mask,
                    positions=utils.build_positions_from_mask(mask), attention_mask=utils.make_causal_attn_mask(mask))
    trainer.with_gen_model_input_fn(model_inputs)
    step, _ = trainer.jit_train_and_eval_step(cache_nnx_graph=True)   # as PeftTrainer.train calls it
    rng = np.random.default_rng(0)
    batch = peft_trainer.TrainingInput(input_tokens=tokens(rng, b, n, cfg.vocab_size),
                                       input_mask=jnp.ones((b, n), jnp.int32))
    return runner(step, lambda: batch)


def tunix_dpo(cfg, b, n, prompt):
    from tunix.sft.dpo import dpo_trainer as dpo
    policy = tunix_model(cfg)
    trainer = dpo.DPOTrainer(policy, nnx.clone(policy), optimizer(),
                             dpo.DPOTrainingConfig(eval_every_n_steps=10**9, max_steps=10**9, beta=0.1))
    step, _ = trainer.jit_train_and_eval_step(cache_nnx_graph=True)
    rng = np.random.default_rng(0)
    r = n - prompt
    raw = dpo.TrainingInput(prompt_ids=tokens(rng, b, prompt, cfg.vocab_size),
                            prompt_mask=jnp.ones((b, prompt), jnp.int32),
                            chosen_ids=tokens(rng, b, r, cfg.vocab_size), chosen_mask=jnp.ones((b, r), jnp.int32),
                            rejected_ids=tokens(rng, b, r, cfg.vocab_size), rejected_mask=jnp.ones((b, r), jnp.int32))
    return runner(step, lambda: trainer._prepare_inputs(raw))  # the reference forward runs in here


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=1, help="DPO prompt tokens shared by chosen and rejected")
    ap.add_argument("--kinds", default="lm,dpo", help="lm (SFT/CPT), dpo, or both")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--json", help="append the figures to this JSON-lines file (bench/targets.py reads it)")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 2 layers, hidden 64, vocab 256, seq 64, "
                    "batch 2, 1 step")
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)
    cfg = get_preset(args.preset)
    if args.tiny:
        cfg = dataclasses.replace(cfg, **TINY)
        args.seq, args.batch, args.steps = 64, 2, 1
    if not 0 < args.prompt < args.seq:
        ap.error("--prompt must be in [1, seq)")
    kinds = args.kinds.split(",")
    if not kinds or set(kinds) - {"lm", "dpo"}:
        ap.error(f"--kinds takes lm, dpo or lm,dpo, not {args.kinds!r}")
    try:
        import tunix
    except ImportError:
        sys.exit("google-tunix is not installed here: run `make bench-tunix` (see the docstring)")
    print(f"{'tiny' if args.tiny else args.preset}, seq {args.seq}, batch {args.batch} (DPO: {args.batch} pairs, "
          f"prompt {args.prompt}), fp32, AdamW; tunix {getattr(tunix, '__version__', '?')}, jax {jax.__version__}")
    print(f"{'step':5} {'impl':11} {'s/step':>8} {'tokens/s':>9}")
    makers = {"tunix": {"lm": lambda: tunix_sft(cfg, args.batch, args.seq),
                        "dpo": lambda: tunix_dpo(cfg, args.batch, args.seq, args.prompt)}}
    if not args.skip_ours:
        from train_step import ours  # bench/train_step.py: same batch layout, live frozen reference for DPO
        makers["findap-jax"] = {k: (lambda k=k: ours(cfg, k, args.batch, args.seq, prompt=args.prompt / args.seq))
                                for k in ("lm", "dpo")}
    res, paired, steps = {}, {}, {}
    for kind in kinds:
        n_tok = args.batch * args.seq * (1 if kind == "lm" else 2)
        # both stacks' steps alternate, each timed step after a settle step (timing.interleaved_times)
        times, ratios = interleaved_times({name: fns[kind]() for name, fns in makers.items()}, args.steps)
        paired[kind] = ratios
        for name, t in times.items():
            res[(kind, name)] = t
            steps.setdefault(kind, {})[name] = {"s_per_step": t, "tokens_per_s": n_tok / t}
            print(f"{'SFT' if kind == 'lm' else 'DPO':5} {name:11} {t:8.2f} {n_tok / t:9.1f}", flush=True)
        gc.collect()   # the trainers hold reference cycles; free this kind's models and moments before the next
    if len(kinds) == 2:
        for name in makers:
            print(f"{name}: DPO / SFT time per sequence = {res[('dpo', name)] / res[('lm', name)] / 2:.2f}")
    if not args.skip_ours:
        print("findap-jax / tunix tokens/s: " + ", ".join(
            f"{'SFT' if kind == 'lm' else 'DPO'} {res[(kind, 'tunix')] / res[(kind, 'findap-jax')]:.2f} (median of "
            f"the per-round ratios {1 / paired[kind]['findap-jax']:.2f})" for kind in kinds))
    # the per-round figure: the median over rounds of tunix's time over ours (ours' speed-up)
    append_record(args.json, "tunix_peer", args, {
        "steps": steps, "per_round_median": {k: 1 / r["findap-jax"] for k, r in paired.items() if "findap-jax" in r}})


if __name__ == "__main__":
    main()
