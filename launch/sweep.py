#!/usr/bin/env python3
"""A grid of config overrides: one findap-jax launch per point, each in its own workdir.

    python launch/sweep.py --config configs/recipes/findap_smollm2_cpu.py --root runs/sweep \
        --grid cpt_it.train.lr=1e-5,1e-4 --grid cpt_it.data.joint.cpt_rate=0.25,0.5

prints one command per point (the product of the --grid axes); `--local` runs them here one
after another instead; `--launcher tpu_pod|sbatch|local_multiprocess` wraps each command for
launch/tpu_pod.sh (run step only: create, copy and install the pod once beforehand),
launch/slurm_gpu.sbatch or launch/local_multiprocess.sh. Values are split on commas, or given
as a Python/JSON list when they contain commas: --grid 'stages=["cpt_it,distill,rpo","distill,rpo"]'.
`--set KEY=VALUE` applies to every point. Every point is loaded with findap_jax.config.load_config
before anything is printed or run: an unknown key or a bad value stops the sweep and names it.
The workdir of a point is ROOT/<key>-<value>__<key>-<value>... (grid keys only).
"""
from __future__ import annotations

import argparse
import ast
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ("none", "tpu_pod", "sbatch", "local_multiprocess")


def parse_axis(text: str) -> tuple[str, list[str]]:
    """'key=v1,v2' or 'key=[...]' -> (key, [v1, v2])."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ValueError(f"--grid {text!r} must look like key=value1,value2")
    values = values.strip()
    if values.startswith("["):
        try:
            items = ast.literal_eval(values)
        except (ValueError, SyntaxError):
            raise ValueError(f"--grid {key}: {values!r} is not a list literal") from None
        out = [v if isinstance(v, str) else repr(v) for v in items]
    else:
        out = [v.strip() for v in values.split(",")]
    if not out or any(v == "" for v in out):
        raise ValueError(f"--grid {key}: empty value in {values!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"--grid {key}: repeated value in {values!r}")
    return key, out


def expand(axes: list[tuple[str, list[str]]]) -> list[list[tuple[str, str]]]:
    """The product of the axes: one list of (key, value) per point, first axis slowest."""
    keys = [k for k, _ in axes]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"--grid: key(s) {dup} given more than once")
    return [list(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def point_name(point: list[tuple[str, str]]) -> str:
    """A folder name from the overrides of a point (characters outside [A-Za-z0-9._-] -> _)."""
    name = "__".join(f"{k}-{v}" for k, v in point) or "default"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def join(root: str, name: str) -> str:
    """root/name for local paths and gs://... alike."""
    return f"{root.rstrip('/')}/{name}"


def validate(config: str, overrides: list[str], verb: str) -> None:
    """Load the config with these overrides (raises KeyError/ValueError naming the key) and
    check it is a config of `verb`; a recipe's stage list is checked as the recipe would."""
    from findap_jax.config import load_config
    cfg = load_config(config, overrides)
    if verb == "recipe":
        if "stages" not in cfg:
            raise ValueError(f"{config} is not a recipe config (no 'stages'); use --verb train")
        from findap_jax.recipe import _stages
        _stages(cfg)
    elif not {"model", "data", "train", "run"} <= set(cfg.keys()):
        raise ValueError(f"{config} is not a train config (model/data/train/run); use --verb recipe")


def findap_command(verb: str, config: str, workdir: str, overrides: list[str]) -> list[str]:
    return ["findap-jax", verb, f"--config={config}", "--workdir", workdir] + [f"--config.{o}" for o in overrides]


def wrap(launcher: str, verb: str, config: str, workdir: str, overrides: list[str], name: str) -> list[str]:
    flags = [f"--config.{o}" for o in overrides]
    if launcher == "none":
        return findap_command(verb, config, workdir, overrides)
    if launcher == "tpu_pod":
        return ["launch/tpu_pod.sh", "--steps", "run", "--verb", verb, "--config", config,
                "--workdir", workdir, "--"] + flags
    if launcher == "sbatch":
        return ["sbatch", f"--job-name=findap-{name}"[:128], "launch/slurm_gpu.sbatch", verb,
                f"--config={config}", "--workdir", workdir] + flags
    if launcher == "local_multiprocess":
        return ["launch/local_multiprocess.sh", "--"] + findap_command(verb, config, workdir, overrides)
    raise ValueError(f"unknown launcher {launcher!r}; choose from {LAUNCHERS}")


def plan(args) -> list[dict]:
    """Every point: name, overrides, workdir, command; validated before anything runs."""
    axes = [parse_axis(g) for g in args.grid]
    fixed = []
    for s in args.set:
        if "=" not in s:
            raise ValueError(f"--set {s!r} must look like key=value")
        fixed.append(s)
    fixed_keys = {s.split("=", 1)[0] for s in fixed}
    clash = sorted(fixed_keys & {k for k, _ in axes})
    if clash:
        raise ValueError(f"key(s) {clash} are both --set and --grid")
    points, seen = [], {}
    for point in expand(axes):
        overrides = fixed + [f"{k}={v}" for k, v in point]
        try:
            validate(args.config, overrides, args.verb)
        except (KeyError, ValueError, TypeError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise ValueError(f"point {point_name(point)}: {msg}") from None
        name = point_name(point)
        if name in seen:   # two points that differ only in characters the name drops
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
        workdir = join(args.root, name)
        points.append(dict(name=name, overrides=overrides, workdir=workdir,
                           command=wrap(args.launcher, args.verb, args.config, workdir, overrides, name)))
    return points


def local_command(cmd: list[str]) -> list[str]:
    """A printed command made runnable from any directory: launch scripts by absolute path,
    findap-jax as the module of this interpreter (no PATH lookup)."""
    cmd = list(cmd)
    if cmd[0].startswith("launch/"):
        cmd[0] = str(ROOT / cmd[0])
    at = 0 if cmd[0] == "findap-jax" else cmd.index("--") + 1
    assert cmd[at] == "findap-jax", cmd
    return cmd[:at] + [sys.executable, "-m", "findap_jax.cli"] + cmd[at + 1:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="config file[:arg] (the same for every point)")
    p.add_argument("--root", required=True, help="parent of the points' workdirs (a local path or gs://...)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="one axis of the grid (repeat for more axes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every point (repeatable)")
    p.add_argument("--verb", default="recipe", choices=["recipe", "train"])
    p.add_argument("--launcher", default="none", choices=LAUNCHERS,
                   help="wrap each command for a launch script (default: the plain findap-jax command)")
    p.add_argument("--local", action="store_true",
                   help="run the points here, one after another (launcher none or local_multiprocess)")
    p.add_argument("--keep-going", action="store_true", help="with --local: run the rest after a failure")
    return p


def main(argv=None, runner=subprocess.run) -> int:
    args = build_parser().parse_args(argv)
    if args.local and args.launcher not in ("none", "local_multiprocess"):
        print(f"sweep.py: error: --local runs the points on this machine; --launcher {args.launcher} "
              "commands are for a pod or a cluster (print them and run them there)", file=sys.stderr)
        return 2
    try:
        points = plan(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 2
    if not args.local:
        for pt in points:
            print(shlex.join(pt["command"]))
        return 0
    failed = []
    for i, pt in enumerate(points, 1):
        cmd = local_command(pt["command"])
        print(f"[sweep] {i}/{len(points)} {pt['name']}: {shlex.join(cmd)}", flush=True)
        rc = runner(cmd).returncode
        if rc != 0:
            failed.append(pt["name"])
            print(f"[sweep] {pt['name']} failed with status {rc}", file=sys.stderr, flush=True)
            if not args.keep_going:
                break
    if failed:
        print(f"[sweep] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"[sweep] {len(points)} points done under {args.root}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))   # findap_jax from this checkout when not installed
    sys.exit(main())
