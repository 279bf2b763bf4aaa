"""Two local processes x 4 virtual devices (jax.distributed on loopback) train to the same
parameters as one process with 8 devices."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from findap_jax import load_pretrained
from tests.helpers import save_tiny_chat_model

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _single_and_two_hosts(tmp_path, command: list) -> str:
    """Run `command` as 1 process x 8 devices (workdir single/) and as 2 processes x 4
    devices on loopback (workdir multi/); both must succeed. Host output goes to files, not
    pipes (a full pipe would block one host inside a collective). Returns the single run's
    output."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    single = subprocess.run(command + ["--workdir", str(tmp_path / "single")], cwd=ROOT, capture_output=True,
                            text=True, env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert single.returncode == 0, single.stderr[-2000:]
    port = _free_port()
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = [subprocess.Popen(command + ["--workdir", str(tmp_path / "multi"), f"--config.run.coordinator=localhost:{port}",
                                         "--config.run.num_processes=2", f"--config.run.process_id={i}"],
                              cwd=ROOT, stdout=open(logs[i], "w"), stderr=subprocess.STDOUT,
                              env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
             for i in range(2)]
    for p, log in zip(procs, logs):
        p.wait(timeout=600)
        assert p.returncode == 0, log.read_text()[-2000:]
    return single.stdout + single.stderr


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    model = tmp_path / "model"
    save_tiny_chat_model(model)
    # Unshuffled DPO pairs: host i reads pairs i, i+2, ..., so the global batch of the two
    # hosts holds the same pairs as the single process's batch. HH-RLHF pairs vary in length:
    # the single process packs a batch's 16 pairs into 8 prompt-shared rows of a multiple of
    # 256 tokens (train.pack_pairs); the two hosts agree on one row length and count, so
    # they run other rows to the same result.
    common = [sys.executable, "-m", "findap_jax.cli", "train", f"--config={ROOT / 'configs/dpo.py'}",
              f"--config.model.path={model}", "--config.data.seq_len=512", "--config.data.batch_size=16",
              "--config.data.mixture=findap_general_preference", "--config.train.shared_row_multiple=256",
              "--config.data.shuffle=false", "--config.train.steps=3", "--config.train.lr=1e-3",
              "--config.run.checkpoint_every=0"]
    out = _single_and_two_hosts(tmp_path, common)
    assert "prompt-shared, 8 rows of" in out, out[-2000:]
    a, _ = load_pretrained(tmp_path / "single" / "final")
    b, _ = load_pretrained(tmp_path / "multi" / "final")
    from flax import nnx
    for x, y in zip(jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
    start, _ = load_pretrained(model)
    moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(
        jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(start, nnx.Param))))
    assert moved > 1e-3  # training really changed the parameters


@pytest.mark.slow
def test_dev_loss_with_uneven_host_shards_equals_one_process(tmp_path):
    """33 dev documents over 2 hosts at 4 rows each: 5 batches on one, 4 on the other. Each
    batch is a collective, so the hosts must run the same count (the short one pads)."""
    import json
    model = tmp_path / "model"
    save_tiny_chat_model(model)
    for split, n in (("train", 16), ("dev", 33)):
        (tmp_path / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": f"Filing {i}: revenue rose {i} percent while margins held."}) + "\n" for i in range(n)))
    tasks = {"lm": {"kind": "cpt", "train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "dev.jsonl")}}
    common = [sys.executable, "-m", "findap_jax.cli", "train", f"--config={ROOT / 'configs/sft.py'}",
              f"--config.model.path={model}", "--config.data.seq_len=64", "--config.data.batch_size=8",
              "--config.data.pack=false", "--config.data.shuffle=false", f"--config.data.tasks={tasks!r}",
              "--config.data.mixture=lm", "--config.run.eval_mixture=lm", "--config.run.eval_every=1",
              "--config.run.eval_batches=0", "--config.train.steps=1", "--config.run.checkpoint_every=0",
              "--config.run.export_final=false"]
    _single_and_two_hosts(tmp_path, common)
    dev = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0])["dev_loss"] for d in ("single", "multi")]
    assert dev[0] == pytest.approx(dev[1], abs=1e-5)


@pytest.mark.slow
def test_precomputed_reference_on_two_hosts_equals_one_process(tmp_path):
    """The reference pass on 2 hosts: global batches over parameters that span both, the same
    batch count on each (17 pairs at 4 per host: 3 batches on one host, 2 on the other)."""
    import json
    model = tmp_path / "model"
    save_tiny_chat_model(model)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(
        {"prompt": f"Did revenue rise in quarter {i}?", "chosen": f"Yes, by {i} percent.", "rejected": "No."}) + "\n"
        for i in range(17)))
    tasks = {"pairs": {"kind": "preference", "train": str(tmp_path / "pairs.jsonl")}}
    common = [sys.executable, "-m", "findap_jax.cli", "train", f"--config={ROOT / 'configs/dpo.py'}",
              f"--config.model.path={model}", "--config.data.seq_len=64", "--config.data.batch_size=8",
              "--config.data.shuffle=false", f"--config.data.tasks={tasks!r}", "--config.data.mixture=pairs",
              "--config.train.reference=precomputed", "--config.train.shared_prompt=false",
              "--config.train.steps=1", "--config.run.checkpoint_every=0", "--config.run.export_final=false"]
    _single_and_two_hosts(tmp_path, common)
    one = json.loads((tmp_path / "single" / "reference_logps.0.json").read_text())["table"]
    hosts = [json.loads((tmp_path / "multi" / f"reference_logps.{i}.json").read_text())["table"] for i in range(2)]
    assert sorted(map(len, hosts)) == [8, 9] and {**hosts[0], **hosts[1]}.keys() == one.keys()
    for key, want in one.items():
        np.testing.assert_allclose({**hosts[0], **hosts[1]}[key], want, atol=1e-4)
