"""Train-step throughput: findap-jax vs transformers + torch, same shapes, same process.

    python bench/train_step.py [--preset smollm2-135m] [--seq 512] [--batch 4] [--steps 3]
                               [--dtype float32|bfloat16] [--param-dtype float32|bfloat16]
                               [--ce-chunk 0] [--head-chunk 256] [--weighted 1.0]
                               [--kinds lm,dpo,dpo-pre] [--prompt 0.0] [--shared-multiple 64] [--skip-torch]
                               [--interleave on|off] [--settle 1] [--json FILE]

AdamW, random weights of the preset's shapes, fp32 master weights by default; `--dtype
bfloat16` computes in bf16 (ours: model dtype; torch: CPU autocast). `--param-dtype
bfloat16` stores weights, gradients and AdamW moments in bf16 on both sides (torch: the
model cast to bf16), which is what lets the 1B preset's training state (19.8 GB in fp32)
fit a 24 GB machine. SFT/CPT step = masked CE fwd+bwd+update; DPO step = policy fwd+bwd on
chosen+rejected plus a frozen reference forward (TRL-style in torch); "rpo" = the same plus
the NLL of the chosen rows (TRL's rpo_alpha=1, mean over chosen tokens); "dpo-pre" = DPO with
precomputed reference log-probs (no reference forward). `--prompt F`: the pairs share a
prompt of the first F of each row and train on the rest; ours runs each pair as one
prompt-shared row (`train.shared_prompt`, the trainer's default), torch both rows whole. Prints the CPU, tokens/s, MFU
against a jax matmul probe of the same dtype measured in this run, the same against each
stack's own library (torch's probe: its 2048^3 matmul, MKL/oneDNN; on some CPUs it is much
faster than XLA's), and ratios. `--weighted F`
trains on the last F of each row (an SFT/DPO answer after its prompt): ours then runs the
head on those positions only (train.head_chunk), transformers on all; MFU counts the head
FLOPs of the trained positions only, for both. The two stacks' steps alternate
(`timing.interleaved_rounds`: one warm-up each, then --steps rounds in which each stack runs
--settle untimed steps and one timed step), so a drift in the machine's speed hits both
alike, while the timed step runs right after one of its own, as in a training job (the
first step after the other stack re-faults freed memory; see `interleaved_rounds`); the
ratio is also printed as the median of the per-round ratios, with their range and how many
fell below 1. `--json FILE` appends the figures to FILE (bench/results.py) for
bench/targets.py. Both stacks' DPO steps held at
once take ~11 GB here (session 17; before session 15's smaller residuals they exceeded a
24 GB machine); `--interleave off` runs each stack's steps after the other's, for less memory.
"""
from __future__ import annotations

import argparse
import functools
import gc
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# bench/matmul_libraries.py, bench/timing.py (the script's folder is on sys.path)
from matmul_libraries import torch_matmul
from results import append_record
from timing import cpu_summary, interleaved_rounds, median_time, paired_ratios, ratio_summary

from findap_jax import defaults
from findap_jax.host_malloc import reexec_with_host_malloc
from findap_jax.model import Llama, get_preset
from findap_jax.train.metrics import measured_matmul_flops, train_flops_per_token
from findap_jax.train.optim import make_optimizer
from findap_jax.train.shared_prompt import share_if_worth_it, shared_length
from findap_jax.train.step import init_state, make_train_step, split_model


def lm_batch(b, n, vocab, rng, weighted=1.0):
    """Random tokens; the last `weighted` fraction of each row is trained on (the answer
    after a prompt; 1.0 = CPT)."""
    tok = rng.integers(0, vocab, (b, n)).astype(np.int32)
    tgt = np.roll(tok, -1, axis=1)
    w = np.zeros((b, n), np.int32)
    w[:, n - max(1, round(weighted * n)):] = 1
    w[:, -1] = 0
    return {"input_tokens": tok, "target_tokens": tgt, "loss_weights": w,
            "segment_ids": np.ones((b, n), np.int32), "positions": np.broadcast_to(np.arange(n), (b, n)).astype(np.int32)}


def pair_batch(b, n, vocab, rng, weighted=1.0, prompt=0.0):
    """Random preference pairs: the first `prompt` of each row is a prompt the two sides
    share, and at most the rest is trained on (`weighted` as in lm_batch)."""
    p = round(prompt * n)
    c = lm_batch(b, n, vocab, rng, min(weighted, (n - p + 1) / n) if p else weighted)
    r = lm_batch(b, n, vocab, rng, min(weighted, (n - p + 1) / n) if p else weighted)
    r["input_tokens"][:, :p] = c["input_tokens"][:, :p]
    r["target_tokens"] = np.roll(r["input_tokens"], -1, axis=1)
    return {**{f"chosen_{k}": v for k, v in c.items()}, **{f"rejected_{k}": v for k, v in r.items()}}


def pair_rows(b, n, vocab, rng, weighted, prompt, shared_multiple):
    """pair_batch's pairs as the trainer feeds them: prompt-shared rows padded to a multiple
    of `shared_multiple` where that pays, packed where pairs fit together (train.pack_pairs;
    these pairs are all one length, so two fit a row only when the prompt is most of it);
    0: train.shared_prompt off, separate rows."""
    batch = pair_batch(b, n, vocab, rng, weighted, prompt)
    pack = defaults.train_config().pack_pairs
    return share_if_worth_it(batch, shared_length(batch, shared_multiple), pack) if shared_multiple else batch


def our_step(cfg, loss, dtype="float32", param_dtype="float32", compiler_options=None, model_kw=None,
             **train):
    """(jitted step, initial state, params, train config) of the trainer's step for `loss` with
    AdamW at a constant lr, random weights of cfg's shapes; `train` overrides train.* keys,
    `model_kw` passes Llama options (attention, remat). The state is donated to the step."""
    tc = defaults.train_config()
    tc.update(dict(loss=loss, steps=1000, warmup=0, schedule="constant", lr=1e-5, **train))
    graphdef, params, rest = split_model(Llama(cfg, rngs=nnx.Rngs(0), dtype=jnp.dtype(dtype),
                                                 param_dtype=jnp.dtype(param_dtype), **(model_kw or {})))
    tx, sched = make_optimizer(tc)
    step = jax.jit(make_train_step(graphdef, tx, sched, tc), donate_argnums=0, compiler_options=compiler_options)
    return step, init_state(params, tx), params, tc


def build_ours(cfg, kind, b, n, dtype="float32", param_dtype="float32", ce_chunk=0, head_chunk=None,
               weighted=1.0, compiler_options=None, prompt=0.0, shared_multiple=None):
    """(jitted step, state, batch, extra args) of one of our train steps (the state is donated);
    head_chunk None = the trainer's default. DPO pairs share a prompt of `prompt` x n
    tokens, run as prompt-shared rows when train.shared_prompt (the default) is on, padded
    to a multiple of `shared_multiple` (None: the trainer's train.shared_row_multiple)."""
    train = dict(ce_chunk=ce_chunk) if head_chunk is None else dict(ce_chunk=ce_chunk, head_chunk=head_chunk)
    step, state, params, tc = our_step(cfg, "dpo" if kind == "dpo-pre" else kind, dtype, param_dtype,
                                       compiler_options, **train)
    rng = np.random.default_rng(0)
    if kind == "lm":
        batch = jax.tree.map(jnp.asarray, lm_batch(b, n, cfg.vocab_size, rng, weighted))
        extra = ()
    else:
        batch = pair_rows(b, n, cfg.vocab_size, rng, weighted, prompt,
                          (shared_multiple or tc.shared_row_multiple) if tc.shared_prompt else 0)
        if kind == "dpo-pre":   # reference log-probs looked up, as train.reference=precomputed does
            batch.update(ref_chosen_logps=np.full(b, -900.0, np.float32),
                         ref_rejected_logps=np.full(b, -900.0, np.float32))
            extra = ()
        else:
            extra = (jax.tree.map(jnp.copy, params),)
        batch = jax.tree.map(jnp.asarray, batch)
    return step, state, batch, extra


def ours_tokens(cfg, kind, b, n, weighted, prompt, shared_multiple) -> int:
    """Real tokens ours runs per step: the DPO rows build_ours builds may come out
    prompt-shared, or stay separate where sharing would not pay."""
    if kind == "lm":
        return b * n
    rows = pair_rows(b, n, cfg.vocab_size, np.random.default_rng(0), weighted, prompt, shared_multiple)
    if "shared_segment_ids" in rows:
        return int((rows["shared_segment_ids"] > 0).sum())
    return 2 * b * n


def ours(cfg, kind, b, n, *args, **kw):
    """One step of ours as a callable (the state is donated and carried across calls)."""
    step, state, batch, extra = build_ours(cfg, kind, b, n, *args, **kw)
    holder = [state]

    def run():
        holder[0], m = step(holder[0], batch, *extra)
        jax.block_until_ready(m["loss"])
    return run


def torch_step(cfg, kind, b, n, dtype="float32", param_dtype="float32", prompt=0.0, **_):
    """One transformers step as a callable. transformers computes logits at every position
    whatever the mask (as TRL's trainers do), so the weighted fraction does not change its work."""
    import torch
    model, make_ref, opt, autocast = torch_training(cfg, dtype, param_dtype)
    ids = torch.randint(0, cfg.vocab_size, (b, n))
    if kind == "lm":
        def run():
            with autocast:
                loss = model(ids, labels=ids, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    else:
        ref = make_ref()
        rejected = torch.randint(0, cfg.vocab_size, (b, n))
        rejected[:, :round(prompt * n)] = ids[:, :round(prompt * n)]   # the same work either way
        both = torch.cat([ids, rejected])

        def logps(m, x):
            logits = m(x, use_cache=False).logits[:, :-1]
            return torch.log_softmax(logits.float(), -1).gather(-1, x[:, 1:, None])[..., 0].sum(-1)

        def run():
            with autocast:
                with torch.no_grad():
                    r = logps(ref, both) if kind in ("dpo", "rpo") else torch.full((2 * b,), -900.0)
                p = logps(model, both)
            nll = -p[:b].sum() / (b * (n - 1)) if kind == "rpo" else None   # RPO: chosen tokens' mean NLL
            torch_dpo_update(p, r, b, opt, nll)
    return run


def torch_matmul_flops(n: int = 2048, repeats: int = 5, dtype="float32") -> float:
    """FLOP/s of torch's n x n matmul in `dtype` (bf16: what CPU autocast runs the linear
    layers in), the mean over `repeats` calls as jax's probe (`measured_matmul_flops`)."""
    import time
    run = torch_matmul(n, n, n, dtype)
    run()
    t = time.perf_counter()
    for _ in range(repeats):
        run()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)


def torch_training(cfg, dtype="float32", param_dtype="float32"):
    """(policy in train mode, a maker of frozen references, AdamW, autocast context) for a
    transformers Llama of cfg's shapes, seeded; bf16 `param_dtype` casts the model, bf16
    `dtype` computes under CPU autocast."""
    import contextlib

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    hf = cfg.to_hf()
    hf.pop("architectures", None)
    model = LlamaForCausalLM(LlamaConfig(**hf)).train()
    if param_dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()
    return model, lambda: LlamaForCausalLM(LlamaConfig(**hf)).eval().to(model.dtype), opt, autocast


def torch_dpo_update(policy, ref, n, opt, nll=None):
    """TRL's sigmoid DPO loss (beta 0.1) from the policy's and the reference's summed
    log-probs of [n chosen; n rejected] rows (plus `nll`, RPO's chosen NLL, if given), its
    backward pass and one optimizer step."""
    import torch
    margin = 0.1 * ((policy[:n] - ref[:n]) - (policy[n:] - ref[n:]))
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    if nll is not None:
        loss = loss + nll
    loss.backward()
    opt.step()
    opt.zero_grad()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--param-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--ce-chunk", type=int, default=0)
    ap.add_argument("--head-chunk", type=int, default=defaults.train_config().head_chunk)
    ap.add_argument("--weighted", type=float, default=1.0,
                    help="fraction of each row trained on (SFT/DPO answers; 0.39 = the bundled findap_it)")
    ap.add_argument("--prompt", type=float, default=0.0,
                    help="DPO pairs share a prompt of this fraction of each row (trained: the rest); ours then "
                         "runs each pair as one prompt-shared row (train.shared_prompt)")
    ap.add_argument("--shared-multiple", type=int, default=defaults.train_config().shared_row_multiple,
                    help="prompt-shared rows are padded to a multiple of this (train.shared_row_multiple)")
    ap.add_argument("--kinds", default="lm,dpo,dpo-pre")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--interleave", default="on", choices=["on", "off"],
                    help="alternate the stacks' steps (off: one stack after the other, half the memory)")
    ap.add_argument("--settle", type=int, default=1,
                    help="untimed steps before each timed one when the stacks alternate")
    ap.add_argument("--json", help="append the figures to this JSON-lines file (bench/targets.py reads it)")
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)
    cfg = get_preset(args.preset)
    peak = measured_matmul_flops(dtype=args.dtype)
    own_peak = {"findap-jax": peak}
    if not args.skip_torch:
        own_peak["transformers"] = torch_matmul_flops(dtype=args.dtype)
    # MFU counts the FLOPs the loss needs: the LM head only on the trained positions
    def fpt(weighted):
        return train_flops_per_token(cfg, args.seq) - 6.0 * cfg.vocab_size * cfg.hidden_size * (1 - weighted)
    p = round(args.prompt * args.seq)
    print(f"{args.preset}, seq {args.seq}, batch {args.batch} (DPO: {args.batch} pairs), {args.dtype} compute, "
          f"{args.param_dtype} weights and AdamW state, ce_chunk {args.ce_chunk}, head_chunk "
          f"{args.head_chunk}, {args.weighted:.0%} of positions trained on, DPO pairs sharing a prompt of "
          f"{p} tokens (ours: rows padded to a multiple of {args.shared_multiple}); "
          f"{args.dtype} matmul peak measured {peak / 1e9:.0f} GFLOP/s"
          + (f" (jax; torch's {own_peak['transformers'] / 1e9:.0f})" if not args.skip_torch else ""))
    print(cpu_summary())
    print(f"{'step':8} {'impl':14} {'s/step':>8} {'tokens/s':>9} {'MFU':>6} {'MFU own':>8}  "
          "(MFU: against jax's matmul probe; own: against the stack's own library's)")
    res, paired, steps, kinds = {}, {}, {}, args.kinds.split(",")
    for kind in kinds:
        n_tok = args.batch * args.seq * (1 if kind == "lm" else 2)
        trained = min(args.weighted, (args.seq - p + 1) / args.seq) if kind != "lm" and p else args.weighted
        flops = fpt(trained) * n_tok * (4 / 3 if kind in ("dpo", "rpo") else 1)  # + reference forward (1/3 of fwd+bwd)
        impls = [("findap-jax", ours)] + ([] if args.skip_torch else [("transformers", torch_step)])
        makers = {name: functools.partial(fn, cfg, kind, args.batch, args.seq, args.dtype, args.param_dtype,
                                          ce_chunk=args.ce_chunk, head_chunk=args.head_chunk,
                                          weighted=args.weighted, prompt=args.prompt,
                                          shared_multiple=args.shared_multiple) for name, fn in impls}
        # ours with a shared prompt runs fewer tokens: its MFU counts the tokens it ran
        run_tok = {"findap-jax": ours_tokens(cfg, kind, args.batch, args.seq, args.weighted, args.prompt,
                                             args.shared_multiple)}
        if args.interleave == "on":
            rounds = interleaved_rounds({name: make() for name, make in makers.items()}, args.steps,
                                        settle=args.settle)
            times = {name: statistics.median(v) for name, v in rounds.items()}
            if "transformers" in rounds:
                paired[kind] = paired_ratios(rounds, "transformers", "findap-jax")
        else:   # one stack after the other, each freed before the next is built
            times = {}
            for name, make in makers.items():
                times[name] = median_time(make(), args.steps)
                gc.collect()
        for name, t in times.items():
            res[(kind, name)] = t
            mfu = flops * run_tok.get(name, n_tok) / n_tok / t / peak
            mfu_own = mfu * peak / own_peak[name]
            steps.setdefault(kind, {})[name] = {"s_per_step": t, "tokens_per_s": n_tok / t, "mfu": mfu,
                                                "mfu_own": mfu_own}
            print(f"{kind:8} {name:14} {t:8.2f} {n_tok / t:9.0f} {mfu:6.3f} {mfu_own:8.3f}", flush=True)
    names = ["findap-jax"] + ([] if args.skip_torch else ["transformers"])
    if not args.skip_torch:
        for kind in kinds:
            pr = (f" (per-round ratios: {ratio_summary(paired[kind])})" if kind in paired
                  else " (run one after the other)")
            print(f"{kind}: findap-jax / transformers tokens/s = "
                  f"{res[(kind, 'transformers')] / res[(kind, 'findap-jax')]:.2f}{pr}")
    if "lm" in kinds:
        for kind in (k for k in kinds if k != "lm"):
            print(f"{kind} / SFT time per sequence: " + ", ".join(
                f"{nm} {res[(kind, nm)] / res[('lm', nm)] / 2:.2f}" for nm in names))
    append_record(args.json, "train_step", args, {
        "matmul_peak_gflops": {name: v / 1e9 for name, v in own_peak.items()},
        "steps": steps, "per_round": paired})


if __name__ == "__main__":
    main()
