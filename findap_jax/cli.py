"""`findap-jax` command line: one verb per stage of the pipeline.

Verbs: recipe (the whole FinDAP pipeline), train, eval, compare, ablations, distill, convert,
generate, data. Config-driven verbs take `--config=FILE.py[:arg]` and `--config.key=value`.
"""
from __future__ import annotations

import argparse
import sys
import time


def _convert(args) -> int:
    from findap_jax.checkpoints import load_pretrained, save_pretrained
    if args.to == "orbax" and args.save_dtype:   # refused before the load, not after
        raise ValueError("--save-dtype applies to HF exports; an orbax export keeps the dtype the "
                         "model is loaded in (--dtype)")
    model, tok = load_pretrained(args.src, dtype=args.dtype, chat_format=args.chat_format)
    out = save_pretrained(model, tok, args.dst, to=args.to, dtype=args.save_dtype)
    print(f"wrote {args.to} model to {out}")
    return 0


def _generate(args) -> int:
    from findap_jax import generate, load_pretrained
    t0 = time.perf_counter()
    model, tok = load_pretrained(args.model, dtype=args.dtype, chat_format=args.chat_format)
    t1 = time.perf_counter()
    outs = generate(model, tok, args.prompt, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                    seed=args.seed, stop=args.stop, chat=args.chat, system=args.system)
    t2 = time.perf_counter()
    for p, o in zip(args.prompt, outs):
        if len(args.prompt) > 1:
            print(f"### {p}")
        print(o)
    print(f"[loaded in {t1 - t0:.1f}s, generated in {t2 - t1:.1f}s]", file=sys.stderr)
    return 0


def _data(args) -> int:
    from findap_jax.checkpoints.loader import load_tokenizer
    from findap_jax.config import load_config
    from findap_jax.data.inspect import inspect

    if args.action != "inspect":
        raise ValueError(f"unknown data action {args.action!r} (inspect)")
    if not args.config:
        raise ValueError("--config=FILE.py[:arg] is required")
    cfg = load_config(args.config, args.config_overrides)
    tok = load_tokenizer(cfg.model.path, cfg.model.chat_format)
    inspect(cfg, tok, examples=args.examples, batches=args.batches, rows=args.rows, split=args.split)
    return 0


def _train(args) -> int:
    from findap_jax.config import load_config
    from findap_jax.parallel.distributed import maybe_initialize
    from findap_jax.train.trainer import Trainer

    if not args.config:
        raise ValueError("--config=FILE.py[:arg] is required")
    cfg = load_config(args.config, args.config_overrides)
    maybe_initialize(cfg.run)
    Trainer(cfg, args.workdir).run()
    return 0


def _eval(args) -> int:
    from findap_jax.config import load_config
    from findap_jax.eval.evaluate import run_eval

    if not args.config:
        raise ValueError("--config=FILE.py[:arg] is required (e.g. configs/eval/fineval.py)")
    run_eval(load_config(args.config, args.config_overrides))
    return 0


def _distill(args) -> int:
    from findap_jax.config import load_config
    from findap_jax.distill.pipeline import run_distill

    if not args.config:
        raise ValueError("--config=FILE.py[:arg] is required (e.g. configs/distill/cfa.py)")
    run_distill(load_config(args.config, args.config_overrides))
    return 0


def _recipe(args) -> int:
    from findap_jax.config import load_config
    from findap_jax.parallel.distributed import maybe_initialize
    from findap_jax.recipe import run_recipe

    if not args.config:
        raise ValueError("--config=FILE.py[:arg] is required (e.g. configs/recipes/findap_smollm2_cpu.py)")
    cfg = load_config(args.config, args.config_overrides)
    maybe_initialize(cfg.cpt_it.run)
    run_recipe(cfg, args.workdir)
    return 0


def _ablations(args) -> int:
    from findap_jax.ablations import write_ablation_report
    print(f"wrote {write_ablation_report(args.workdirs, args.out)}")
    return 0


def _compare(args) -> int:
    from findap_jax.eval.report import compare_chart
    print(f"wrote {compare_chart(args.runs, args.out, args.label)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="findap-jax", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)

    c = sub.add_parser("convert", help="convert a model between HF, GGUF (input only) and orbax")
    c.add_argument("--src", required=True, help="HF directory, .gguf file or orbax export")
    c.add_argument("--dst", required=True, help="output directory")
    c.add_argument("--to", choices=["hf", "orbax"], default="hf")
    c.add_argument("--dtype", default="float32", help="dtype to load parameters in")
    c.add_argument("--save-dtype", default=None, help="dtype of the saved HF tensors (default: as loaded)")
    c.add_argument("--chat-format", default=None, choices=["llama3", "chatml", "smollm"])
    c.set_defaults(fn=_convert)

    g = sub.add_parser("generate", help="generate text from a model")
    g.add_argument("--model", required=True, help="HF directory, .gguf file or orbax export")
    g.add_argument("--prompt", required=True, action="append", help="repeat for a batch")
    g.add_argument("--chat", action="store_true", help="wrap each prompt in the chat template")
    g.add_argument("--system", default=None, help="system message (with --chat)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--dtype", default="float32")
    g.add_argument("--chat-format", default=None, choices=["llama3", "chatml", "smollm"])
    g.set_defaults(fn=_generate)

    rc = sub.add_parser("recipe", help="the FinDAP stages in order (configs/recipes/), resumable")
    rc.add_argument("--workdir", required=True, help="one folder per stage, eval/, report.md")
    rc.set_defaults(fn=_recipe)

    t = sub.add_parser("train", help="train (CPT, SFT, joint CPT+IT, DPO, IPO, RPO) from a config")
    t.add_argument("--workdir", required=True, help="checkpoints, logs, config.json, final export")
    t.set_defaults(fn=_train)

    e = sub.add_parser("eval", help="FinEval-style evaluation from a config (configs/eval/)")
    e.set_defaults(fn=_eval)

    s = sub.add_parser("distill", help="GenRM preference distillation (FAP + SCP pairs) from a config")
    s.set_defaults(fn=_distill)

    r = sub.add_parser("compare", help="bar chart (PNG) of several eval output dirs")
    r.add_argument("runs", nargs="+", help="eval output dirs (each with results.json)")
    r.add_argument("--out", required=True, help="PNG path")
    r.add_argument("--label", action="append", default=None, help="legend label per run (repeat)")
    r.set_defaults(fn=_compare)

    a = sub.add_parser("ablations", help="one markdown table over several recipe workdirs (ablation arms)")
    a.add_argument("workdirs", nargs="+", help="recipe workdirs, one per arm")
    a.add_argument("--out", required=True, help="markdown path")
    a.set_defaults(fn=_ablations)

    d = sub.add_parser("data", help="inspect a data config (token counts, shares, masks)")
    d.add_argument("action", choices=["inspect"])
    d.add_argument("--examples", type=int, default=2000, help="examples drawn to measure shares")
    d.add_argument("--batches", type=int, default=20, help="packed batches for fill/coverage")
    d.add_argument("--rows", type=int, default=2, help="rows to decode")
    d.add_argument("--split", default="train")
    d.set_defaults(fn=_data)
    return p


CONFIG_VERBS = ("data", "train", "eval", "distill", "recipe")


def main(argv=None) -> int:
    from findap_jax.config import split_config_args

    spec, overrides, rest = split_config_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(rest)
    if (spec or overrides) and args.verb not in CONFIG_VERBS:   # else they would be ignored
        parser.error(f"{args.verb} takes no --config or --config.* options "
                     f"(the verbs with a config: {', '.join(CONFIG_VERBS)})")
    args.config, args.config_overrides = spec, overrides
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        print(f"findap-jax {args.verb}: error: {e}", file=sys.stderr)
        return 2


def entry() -> int:
    """The `findap-jax` command: first re-run with jemalloc or huge pages for XLA's large
    host allocations (findap_jax/host_malloc.py; a no-op where neither applies), then `main`."""
    from findap_jax.host_malloc import reexec_with_host_malloc

    try:
        reexec_with_host_malloc()
    except (ValueError, RuntimeError) as e:
        print(f"findap-jax: error: {e}", file=sys.stderr)
        return 2
    return main()


if __name__ == "__main__":
    sys.exit(entry())
