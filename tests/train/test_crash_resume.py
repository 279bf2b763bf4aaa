"""kill -9 at seeded random points, some during an async checkpoint save: each rerun of the
same command resumes from the last complete checkpoint, metrics.jsonl ends with one line
per step, and the losses equal an uninterrupted run exactly. Partial checkpoints (orbax's
<step>.orbax-checkpoint-tmp, a step dir without its commit marker) are never resumed from."""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from findap_jax.config import load_config
from findap_jax.train.checkpointing import COMMIT_MARKER
from findap_jax.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TMP = ".orbax-checkpoint-tmp"   # orbax 0.12: a save in progress is checkpoints/<step>.orbax-checkpoint-tmp
STEPS, EVERY, KILLS, SEED = 40, 2, 10, 20240917
STEP_LINE = re.compile(r"^step +(\d+)  loss", re.M)


def _cmd(model, workdir):
    return [sys.executable, "-m", "findap_jax.cli", "train", f"--config={ROOT / 'configs/sft.py'}",
            "--workdir", str(workdir), f"--config.model.path={model}", "--config.data.seq_len=128",
            f"--config.train.steps={STEPS}", "--config.train.lr=1e-3", f"--config.run.checkpoint_every={EVERY}",
            "--config.run.async_checkpoint=true", "--config.run.eval_every=0", "--config.run.log_every=1",
            "--config.run.export_final=false", "--config.data.contamination.eval_tasks="]


def _env(tmp_path):
    # One CPU device; the compilation cache spares each rerun the XLA compile (same executable).
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
                XLA_FLAGS="--xla_force_host_platform_device_count=1",
                JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _complete(ckpts: Path) -> list[int]:
    return sorted(int(d.name) for d in ckpts.iterdir()
                  if d.name.isdigit() and (d / COMMIT_MARKER).exists()) if ckpts.exists() else []


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _attempt(cmd, env, log: Path, kill_now=None) -> tuple[int, str]:
    """Run `cmd` once; SIGKILL it as soon as kill_now(log text) is true."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 400
        while proc.poll() is None and time.time() < deadline:
            if kill_now is not None and kill_now(log.read_text()):
                proc.kill()
                break
            time.sleep(0.002)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, log.read_text()


def _kill_after_step(n):
    return lambda text: any(int(s) >= n for s in STEP_LINE.findall(text))


def _kill_during_save(n, ckpts):
    """True once a save of a step >= n that this process logged is in progress (its tmp dir
    exists: the step's line is printed before its save starts)."""
    def now(text):
        logged = [int(s) for s in STEP_LINE.findall(text)]
        return any((ckpts / f"{k}{TMP}").exists() for k in logged[-3:] if k >= n and k % EVERY == 0)
    return now


def test_kill_9_at_ten_random_points_resumes_exactly(tiny_chat_model, tmp_path):
    env = _env(tmp_path)
    rc, text = _attempt(_cmd(tiny_chat_model, tmp_path / "full"), env, tmp_path / "full.log")
    assert rc == 0, text[-3000:]
    want = {m["step"]: m["loss"] for m in _metrics(tmp_path / "full")}
    assert sorted(want) == list(range(1, STEPS + 1))

    rng = random.Random(SEED)
    targets = sorted(rng.sample(range(2, STEPS - 8), KILLS))
    kinds = rng.sample(["save"] * 4 + ["step"] * (KILLS - 4), KILLS)
    work = tmp_path / "killed"
    ckpts = work / "checkpoints"
    expected_resume, killed, in_save = 0, [], []
    for i, (n, kind) in enumerate(zip(targets, kinds)):
        kill_now = _kill_during_save(n, ckpts) if kind == "save" else _kill_after_step(n)
        rc, text = _attempt(_cmd(tiny_chat_model, work), env, tmp_path / f"attempt{i}.log", kill_now)
        assert rc == -9, f"attempt {i} ({kind} >= {n}) was not killed: rc {rc}\n{text[-3000:]}"
        logged = [int(s) for s in STEP_LINE.findall(text)]
        # Every resume starts right after the last complete checkpoint before the kill.
        assert logged and logged[0] == expected_resume + 1, (i, expected_resume, logged)
        if expected_resume:
            assert f"resumed from step {expected_resume} (" in text, text[-3000:]
        else:
            assert "resumed from" not in text
        partial = [k for k in logged if (ckpts / f"{k}{TMP}").exists()]
        killed.append((kind, n, logged[-1], partial))
        in_save += [i] if partial else []
        complete = _complete(ckpts)
        assert all(k not in complete for k in partial)
        expected_resume = complete[-1] if complete else 0
        assert expected_resume <= logged[-1]

    rc, text = _attempt(_cmd(tiny_chat_model, work), env, tmp_path / "final.log")
    assert rc == 0, text[-3000:]
    assert f"resumed from step {expected_resume} (" in text
    assert [int(s) for s in STEP_LINE.findall(text)] == list(range(expected_resume + 1, STEPS + 1))
    lines = _metrics(work)   # one line per step, in order: the lines after a kill's checkpoint were replaced
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in lines] == [want[s] for s in range(1, STEPS + 1)]
    assert len(killed) == KILLS
    assert in_save, f"no kill landed during an async save: {killed}"
    assert not [p.name for p in ckpts.iterdir() if TMP in p.name]   # stale tmp dirs were removed
    assert _complete(ckpts)[-1] == STEPS
    print(f"kills (kind, target, last logged step, saves in flight): {killed}; "
          f"{len(in_save)} of {KILLS} during an async save")


def _cfg(model, steps):
    over = {"model.path": str(model), "data.seq_len": "128", "train.steps": str(steps), "train.lr": "1e-3",
            "run.log_every": "100", "run.checkpoint_every": "1", "run.eval_every": "0",
            "run.export_final": "false", "run.async_checkpoint": "false", "data.contamination.eval_tasks": ""}
    return load_config(str(ROOT / "configs/sft.py"), [f"{k}={v}" for k, v in over.items()])


def test_partial_checkpoints_and_torn_metrics_are_never_resumed_from(tiny_chat_model, tmp_path):
    work = tmp_path / "work"
    first = Trainer(_cfg(tiny_chat_model, 4), work, log=lambda *_: None)
    first.cfg.train.steps = 2   # stop at 2 (the schedule still spans 4 steps)
    done = first.run()
    ckpts = work / "checkpoints"
    assert (ckpts / "2" / COMMIT_MARKER).exists()
    # A save killed midway (orbax's tmp name) and a half-copied step dir without the commit
    # marker; both hold a restorable copy of step 2, so resuming from either would succeed.
    shutil.copytree(ckpts / "2", ckpts / f"3{TMP}")
    shutil.copytree(ckpts / "2", ckpts / "4")
    (ckpts / "4" / COMMIT_MARKER).unlink()
    with open(work / "metrics.jsonl", "a") as f:   # a step past the checkpoint, then a torn line
        f.write(json.dumps({"step": 3, "loss": 123.0}) + "\n" + '{"loss": 1.5, "st')
    lines = []
    trainer = Trainer(_cfg(tiny_chat_model, 4), work, log=lines.append)
    assert trainer.ckpt.latest_step() == 2
    assert (ckpts / "4.incomplete").is_dir() and not (ckpts / "4").exists()
    assert any(f"no {COMMIT_MARKER}, an incomplete checkpoint; moved to 4.incomplete" in m for m in lines)
    rest = trainer.run()
    assert [h["step"] for h in rest] == [3, 4]
    assert any(m.startswith("resumed from step 2 ") for m in lines), lines
    assert sorted(p.name for p in ckpts.iterdir() if p.name[0].isdigit()) == ["2", "3", "4", "4.incomplete"]
    got = _metrics(work)
    assert [m["step"] for m in got] == [1, 2, 3, 4]
    assert [m["loss"] for m in got] == [h["loss"] for h in done + rest]   # not the stale 123.0
