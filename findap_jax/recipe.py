"""The FinDAP recipe as one resumable job: stage-1 joint CPT+IT (optionally a second
curriculum group), preference distillation from the stage-1 model, RPO from the stage-1
model with it as the frozen reference, and FinEval before and after every stage.

    findap-jax recipe --config=configs/recipes/findap_smollm2_cpu.py --workdir DIR

Layout of DIR: eval/<label>/ (results.json, predictions/), <stage>/ (trainer workdir with
final/), distill/pairs.jsonl, report.md + report.png. A stage whose `.done` marker exists is
skipped, so rerunning after an interruption picks up where it stopped: the trainer resumes
from its last checkpoint, distillation from its progress file, evaluation per task.
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import ml_collections

from findap_jax import defaults
from findap_jax.config import lock_schema
from findap_jax.files import read_json, read_jsonl, write_text_atomic

TRAIN_STAGES = ("cpt_it", "cpt_it_2")
STAGES = TRAIN_STAGES + ("distill", "rpo")


def recipe_config() -> ml_collections.ConfigDict:
    """Defaults of a recipe file; every stage section is a full config of its own verb."""
    cfg = ml_collections.ConfigDict(dict(
        model="smollm2",              # the base model (any load_pretrained path)
        stages="cpt_it,distill,rpo",  # in this order; add cpt_it_2 for a second curriculum group
        eval=defaults.eval_tasks_config(tasks="fpb", limit=0),
        eval_before=True,             # evaluate the base model too
        eval_dtype="float32",         # compute dtype of the evaluations (bfloat16 for big models)
        # Instruction-following check after each eval: greedy replies to the bundled chat
        # prompts must end with end-of-turn within this many tokens (0 = off)
        chat_check_tokens=256,
        cpt_it=defaults.experiment_config(),
        cpt_it_2=defaults.experiment_config(),
        distill=defaults.distill_config(),
        rpo=defaults.experiment_config(
            data=dict(mixture="findap_preference", pack=False),
            train=dict(loss="rpo", lr=5e-7, beta=0.1, alpha=1.0)),
        # RPO data: the distilled pairs (task "distilled_pairs"), mixed with `general_pairs`
        # (a registered preference task or mixture) when distilled_share < 1; the general
        # pairs alone when distillation wrote none ("" = fail instead).
        general_pairs="findap_preference",
        distilled_share=1.0,          # the paper: general pairs in PA are unnecessary
        mesh=dict(data=1, fsdp=-1, tensor=1),
    ))
    for name in TRAIN_STAGES + ("rpo",):
        cfg[name].eval.every = 0      # the recipe evaluates between stages
    return lock_schema(cfg)


def _stages(cfg) -> list[str]:
    from findap_jax.config import comma_list
    names = comma_list(cfg.stages)
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
    if "rpo" in names and "distill" not in names:
        raise ValueError("stages: rpo trains on the distilled pairs; list distill before it")
    if sorted(names, key=STAGES.index) != names or len(set(names)) != len(names):
        raise ValueError(f"stages: {names} must be in the order {list(STAGES)}, each once")
    return names


class Recipe:
    def __init__(self, cfg, workdir, log=print):
        self.cfg, self.dir, self.log = cfg, Path(workdir), log
        self.stages = _stages(cfg)
        from findap_jax.train.trainer import check_workdir
        check_workdir(workdir)
        self.evals: list[tuple[str, Path]] = []   # (label, eval dir) in run order
        self.curves: dict[str, Path] = {}         # stage -> metrics.jsonl
        self.notes: list[str] = []

    # -- bookkeeping -------------------------------------------------------------
    def _done(self, name: str) -> Path:
        return self.dir / f".{name}.done"

    def _finish(self, name: str, info: dict, source: str) -> None:
        """Mark a stage complete, with the model it started from (process 0 writes; every
        process waits for it)."""
        import jax
        if jax.process_index() == 0:
            write_text_atomic(self._done(name), json.dumps({**info, "input": str(source)}, indent=1))
        _barrier(f"recipe_{name}")

    def _info(self, name: str, source: str) -> dict | None:
        """The stage's marker, or None when it has not finished. A stage that finished from
        another model (the stages or the base model changed since) is an error: skipping it
        would report its old outputs as this recipe's."""
        p = self._done(name)
        if not p.exists():
            return None
        info = read_json(p)
        was = info.get("input") if isinstance(info, dict) else None
        if was is not None and os.path.realpath(was) != os.path.realpath(str(source)):   # however spelled
            raise ValueError(f"{p}: stage {name} ran from {was}, but this recipe runs it from {source} "
                             f"(its stages or model changed); use a new workdir, or delete {p.name} and "
                             "the stage's outputs to run it again")
        return info

    # -- stages -----------------------------------------------------------------
    def evaluate(self, label: str, model_path: str) -> None:
        from findap_jax.eval.evaluate import run_eval
        out = self.dir / "eval" / label
        self.evals.append((label, out))
        if self._info(f"eval_{label}", model_path) is not None:
            self.log(f"[recipe] eval {label}: done, skipped")
            return
        ecfg = defaults.eval_config()
        ecfg.update(copy.deepcopy(self.cfg.eval).to_dict())
        ecfg.update(dict(model=str(model_path), output_dir=str(out), mesh=dict(self.cfg.mesh),
                         dtype=self.cfg.eval_dtype))
        t0 = time.time()
        self.log(f"[recipe] eval {label}: {model_path} on {ecfg.tasks}")
        results = run_eval(ecfg, log=self.log)
        info = {"seconds": time.time() - t0, "tasks": sorted(results)}
        if self.cfg.chat_check_tokens:
            info["chat_check"] = chat_check(model_path, self.cfg.chat_check_tokens, out)
            self.log(f"[recipe] eval {label}: {info['chat_check']['ended']}/{info['chat_check']['n']} "
                     "chat replies end their turn")
        self._finish(f"eval_{label}", info, model_path)

    def train(self, name: str, model_path: str, data_overrides: dict | None = None) -> str:
        from findap_jax.train.trainer import Trainer
        wd = self.dir / name
        self.curves[name] = wd / "metrics.jsonl"
        final = wd / "final"
        if self._info(name, model_path) is None:
            tcfg = copy.deepcopy(self.cfg[name])
            tcfg.model.path = str(model_path)
            tcfg.run.mesh = dict(self.cfg.mesh)
            tcfg.run.export_final = True
            if data_overrides:
                with tcfg.unlocked():   # new task/rate names are new keys
                    tcfg.data.update(data_overrides)
            t0 = time.time()
            self.log(f"[recipe] {name}: training from {model_path} ({tcfg.train.loss}, "
                     f"{tcfg.train.steps} steps, mixture {tcfg.data.mixture})")
            Trainer(tcfg, wd, log=self.log).run()
            self._finish(name, {"seconds": time.time() - t0, "final": str(final)}, model_path)
        else:
            self.log(f"[recipe] {name}: done, skipped")
        return str(final)

    def distill(self, policy: str) -> tuple[Path, int]:
        from findap_jax.distill.pipeline import run_distill
        out = self.dir / "distill" / "pairs.jsonl"
        info = self._info("distill", policy)
        if info is None:
            dcfg = copy.deepcopy(self.cfg.distill)
            dcfg.policy = policy
            dcfg.output = str(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            self.log(f"[recipe] distill: policy {policy}, judge {dcfg.judge or 'the policy'}")
            import jax
            # one writer: on several hosts, process 0 distils and the others wait at _finish
            stats = run_distill(dcfg, log=self.log) if jax.process_index() == 0 else {}
            info = {"seconds": time.time() - t0, "stats": stats}
            self._finish("distill", info, policy)
        else:
            self.log("[recipe] distill: done, skipped")
        n = len(read_jsonl(out)) if out.exists() else 0
        return out, n

    def rpo_data(self, pairs: Path, n_pairs: int) -> dict:
        """Data overrides of the RPO stage: distilled pairs mixed with general pairs."""
        general = self.cfg.general_pairs
        tasks = {"distilled_pairs": {"kind": "preference", "train": str(pairs)}}
        if n_pairs == 0:
            if not general:
                raise RuntimeError(f"distillation wrote no preference pairs ({pairs}) and "
                                   "general_pairs is empty: nothing to train RPO on")
            self.notes.append("Distillation produced no pairs: RPO trained on the general pairs only.")
            self.log(f"[recipe] rpo: {pairs} has no pairs; training on {general} only")
            return {"mixture": general}
        if not general or self.cfg.distilled_share >= 1.0:
            return {"tasks": tasks, "mixture": "distilled_pairs"}
        return {"tasks": tasks, "mixture": "custom",
                "rates": {"distilled_pairs": self.cfg.distilled_share,
                          general: 1.0 - self.cfg.distilled_share}}

    # -- the job -----------------------------------------------------------------
    def run(self) -> Path:
        t0 = time.time()
        current = str(self.cfg.model)
        if self.cfg.eval_before:
            self.evaluate("base", current)
        stage1 = current
        for name in self.stages:
            if name in TRAIN_STAGES:
                stage1 = current = self.train(name, current)
                self.evaluate(name, current)
            elif name == "distill":
                pairs, n_pairs = self.distill(stage1)
                self.log(f"[recipe] distill: {n_pairs} pairs in {pairs}")
            elif name == "rpo":
                current = self.train("rpo", stage1, self.rpo_data(pairs, n_pairs))
                self.evaluate("rpo", current)
        import jax
        if jax.process_index() != 0:
            return self.dir / "report.md"
        report = write_report(self.dir, self.evals, self.curves, self.notes)
        self.log(f"[recipe] done in {time.time() - t0:.0f} s (this run); report: {report}")
        return report


def _barrier(name: str) -> None:
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def chat_check(model_path: str, max_new_tokens: int, out_dir: Path) -> dict:
    """Greedy replies to the bundled chat prompts; a reply "ends" when the model emits an
    end-of-turn/EOS token before `max_new_tokens`. Replies go to out_dir/chat_check.jsonl."""
    from findap_jax.checkpoints.loader import load_pretrained
    from findap_jax.eval.evaluate import resolve_eval_model
    from findap_jax.generation.sampler import encode_prompts, fit_prompts, generate_ids

    prompts = read_jsonl(Path(__file__).parent / "eval" / "bundled" / "chat_prompts.jsonl")
    model, tok = load_pretrained(resolve_eval_model(str(model_path)))
    encoded, _ = fit_prompts(model, encode_prompts(tok, [p["prompt"] for p in prompts], True, None),
                             max_new_tokens)
    outs = generate_ids(model, encoded, eos_ids=tok.eos_ids, pad_id=tok.pad_id, max_new_tokens=max_new_tokens)
    ended = [len(o) < max_new_tokens for o in outs]
    import jax
    if jax.process_index() != 0:
        return {"n": len(prompts), "ended": sum(ended), "max_new_tokens": max_new_tokens}
    with open(out_dir / "chat_check.jsonl", "w") as f:
        for p, o, e in zip(prompts, outs, ended):
            f.write(json.dumps({"id": p["id"], "prompt": p["prompt"], "reply": tok.decode(o),
                                "ended_turn": e}) + "\n")
    return {"n": len(prompts), "ended": sum(ended), "max_new_tokens": max_new_tokens}


def write_report(workdir: Path, evals, curves, notes=()) -> Path:
    """report.md (capability table per stage, stage timings) and report.png (eval bars and
    training-loss curves)."""
    from findap_jax.eval.report import read_results
    runs = [(label, read_results(d)) for label, d in evals]
    keys = sorted({k for _, r in runs for k in r})
    lines = ["# FinDAP recipe report", "", f"Workdir: `{workdir}`", "",
             "## FinEval primary metric per stage (%)", "",
             "| task | split | capability | metric | n | " + " | ".join(l for l, _ in runs) + " |",
             "|---|---|---|---|---|" + "---|" * len(runs)]
    for k in keys:
        first = next(r[k] for _, r in runs if k in r)
        metric = first.get("primary", "accuracy")
        cells = [f"{100 * r[k][metric]:.1f}" if k in r and isinstance(r[k].get(metric), float) else "—"
                 for _, r in runs]
        lines.append(f"| {k} | {first.get('split', '')} | {first.get('capability', '')} | {metric} | "
                     f"{first.get('n', '')} | " + " | ".join(cells) + " |")
    checks = [read_json(workdir / f".eval_{label}.done").get("chat_check")
              if (workdir / f".eval_{label}.done").exists() else None for label, _ in runs]
    if any(checks):
        lines.append("| chat replies ending their turn | | instruction following | count | | " +
                     " | ".join(f"{c['ended']}/{c['n']}" if c else "—" for c in checks) + " |")
    lines += ["", "## Stages", "", "| stage | seconds | detail |", "|---|---|---|"]
    for p in sorted(workdir.glob(".*.done")):
        info = read_json(p)
        detail = info.get("stats") or info.get("tasks") or info.get("final", "")
        if isinstance(detail, dict):
            detail = ", ".join(f"{k} {v}" for k, v in detail.items() if isinstance(v, (int, float)))
        elif isinstance(detail, list):
            detail = "tasks " + ", ".join(detail)
        lines.append(f"| {p.name[1:-5]} | {info.get('seconds', 0):.0f} | {detail} |")
    lines += [""] + [f"Note: {n}" for n in notes]
    lines.append("\n![eval and training curves](report.png)\n")
    _plot(workdir / "report.png", runs, curves)
    out = workdir / "report.md"
    out.write_text("\n".join(lines))
    return out


def _plot(path: Path, runs, curves) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    keys = sorted({k for _, r in runs for k in r})
    width = 0.8 / max(len(runs), 1)
    for i, (label, res) in enumerate(runs):
        vals = [100 * res[k][res[k].get("primary", "accuracy")] if k in res else 0.0 for k in keys]
        ax1.bar([j + (i - (len(runs) - 1) / 2) * width for j in range(len(keys))], vals, width, label=label)
    ax1.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax1.set_ylabel("primary metric (%)")
    ax1.set_ylim(0, 100)
    ax1.legend()
    ax1.set_title("FinEval per stage")
    for name, mpath in curves.items():
        if mpath.exists():
            rows = read_jsonl(mpath)
            ax2.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name, marker=".")
    ax2.set_xlabel("step")
    ax2.set_ylabel("training loss")
    ax2.set_title("training curves")
    if curves:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_recipe(cfg, workdir, log=print) -> Path:
    return Recipe(cfg, workdir, log=log).run()
