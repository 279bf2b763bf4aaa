"""Preemption: SIGTERM mid-run -> checkpoint of the current step, clean exit, exact resume."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from findap_jax.config import load_config
from findap_jax.train.trainer import PREEMPTED_EXIT_CODE, Preempted, StopSignal, Trainer

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _train_cmd(model, workdir, steps, *extra):
    # checkpoint_every=0: the only checkpoint a stopped run can have is the one SIGTERM wrote.
    return [sys.executable, "-m", "findap_jax.cli", "train", f"--config={ROOT / 'configs/sft.py'}",
            "--workdir", str(workdir), f"--config.model.path={model}", "--config.data.seq_len=128",
            f"--config.train.steps={steps}", "--config.train.lr=1e-3", "--config.run.checkpoint_every=0",
            "--config.run.eval_every=0", "--config.run.export_final=false", "--config.run.log_every=1",
            *extra]


def _metrics(workdir) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _wait_for_step(workdir, step, procs, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(_metrics(workdir)) >= step:
            return
        for p in procs:
            assert p.poll() is None, f"training exited early with {p.returncode}"
        time.sleep(0.02)
    raise AssertionError(f"no step {step} in {workdir} after {timeout}s")


def _ckpt_steps(workdir) -> list[int]:
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _cfg(model, **over):
    base = {"model.path": str(model), "data.seq_len": "128", "run.log_every": "1", "train.lr": "1e-3",
            "run.checkpoint_every": "0", "run.eval_every": "0", "run.export_final": "true"}
    base.update(over)
    return load_config(str(ROOT / "configs/sft.py"), [f"{k}={v}" for k, v in base.items()])


def test_stop_signal_restores_the_previous_handler():
    def mine(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, mine)
    try:
        with StopSignal() as stop:
            assert signal.getsignal(signal.SIGTERM) is not mine
            os.kill(os.getpid(), signal.SIGTERM)   # would end pytest if the handler were not ours
            time.sleep(0.05)
            assert stop.requested and stop.agreed()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


def test_sigterm_in_process_stops_after_the_current_step(tiny_chat_model, tmp_path):
    """The signal lands while step 2 is being logged: the run ends at step 2 with a
    checkpoint of step 2, no final export, and a second Trainer resumes at step 3.
    run() raises (not returns) so that a pipeline around it does not go on to the next stage."""
    lines = []

    def log(msg):
        lines.append(msg)
        if msg.lstrip().startswith("step      2 "):
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(_cfg(tiny_chat_model, **{"train.steps": "5"}), tmp_path, log=log)
    with pytest.raises(Preempted) as stopped:
        trainer.run()
    assert stopped.value.step == 2 and stopped.value.code == PREEMPTED_EXIT_CODE
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is before
    assert _ckpt_steps(tmp_path) == [2] and not (tmp_path / "final").exists()
    assert any("SIGTERM: checkpoint of step 2 saved" in m for m in lines), lines
    again = Trainer(_cfg(tiny_chat_model, **{"train.steps": "5"}), tmp_path, log=lines.append)
    rest = again.run()
    assert [h["step"] for h in rest] == [3, 4, 5]
    assert "resumed from step 2" in " ".join(lines) and (tmp_path / "final").exists()


@pytest.mark.slow
def test_sigterm_to_cli_saves_exits_75_and_resumes_exactly(tiny_chat_model, tmp_path):
    env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    steps = 30
    full = subprocess.run(_train_cmd(tiny_chat_model, tmp_path / "full", steps), env=env, cwd=ROOT,
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    work = tmp_path / "stopped"
    log = tmp_path / "stopped.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(_train_cmd(tiny_chat_model, work, steps), env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        _wait_for_step(work, 3, [proc])
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=300)
    text = log.read_text()
    assert rc == PREEMPTED_EXIT_CODE, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    done = [m["step"] for m in _metrics(work)]
    stopped_at = done[-1]
    assert 3 <= stopped_at < steps, "the run finished before SIGTERM reached it"
    assert done == list(range(1, stopped_at + 1))
    assert _ckpt_steps(work) == [stopped_at]
    assert f"SIGTERM: checkpoint of step {stopped_at} saved" in text, text[-3000:]

    again = subprocess.run(_train_cmd(tiny_chat_model, work, steps), env=env, cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from step {stopped_at}" in again.stdout
    resumed = {m["step"]: m["loss"] for m in _metrics(work)}
    want = {m["step"]: m["loss"] for m in _metrics(tmp_path / "full")}
    assert sorted(resumed) == sorted(want) == list(range(1, steps + 1))
    assert [resumed[s] for s in range(1, steps + 1)] == [want[s] for s in range(1, steps + 1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_to_one_host_stops_every_host_at_the_same_step(tiny_chat_model, tmp_path):
    """Only process 0 gets the signal; without the combined flag process 1 would go on
    alone and hang in the next collective."""
    port, work, steps = _free_port(), tmp_path / "multi", 40
    env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    outs = [open(log, "w") for log in logs]   # files, not pipes: a full pipe would block a collective
    procs = [subprocess.Popen(_train_cmd(tiny_chat_model, work, steps, f"--config.run.coordinator=localhost:{port}",
                                         "--config.run.num_processes=2", f"--config.run.process_id={i}"),
                              cwd=ROOT, env=env, stdout=outs[i], stderr=subprocess.STDOUT)
             for i in range(2)]
    try:
        _wait_for_step(work, 3, procs)
        procs[0].send_signal(signal.SIGTERM)
        rcs = [p.wait(timeout=240) for p in procs]
    finally:
        for p, out in zip(procs, outs):
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
    texts = [log.read_text() for log in logs]
    assert rcs == [PREEMPTED_EXIT_CODE] * 2, [t[-2000:] for t in texts]
    stopped_at = _metrics(work)[-1]["step"]
    assert stopped_at < steps, "the run finished before SIGTERM reached it"
    assert _ckpt_steps(work) == [stopped_at]
    for t in texts:
        assert f"SIGTERM: checkpoint of step {stopped_at} saved" in t, t[-2000:]
