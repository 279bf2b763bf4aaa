"""The trainer end to end on a tiny model: learning happens, resume is exact."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from findap_jax.config import load_config
from findap_jax.train.trainer import Trainer, check_workdir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tiny_chat_model):
    return tiny_chat_model


def _cfg(config, model, **over):
    base = {"model.path": str(model), "data.seq_len": "256", "run.log_every": "100",
            "run.checkpoint_every": "0", "run.eval_every": "0", "run.export_final": "false"}
    base.update(over)
    return load_config(str(ROOT / config), [f"{k}={v}" for k, v in base.items()])


def test_sft_lowers_dev_loss(tiny_model, tmp_path):
    cfg = _cfg("configs/sft.py", tiny_model, **{"train.steps": "25", "train.lr": "3e-3", "train.warmup": "2",
                                               "run.eval_batches": "4"})
    trainer = Trainer(cfg, tmp_path, log=lambda *_: None)
    before = trainer.eval_loss()
    history = trainer.run()
    after = trainer.eval_loss()
    assert len(history) == 25 and after < before - 0.3, (before, after)


def test_early_stop_is_logged_saved_and_kept_on_rerun(tiny_model, tmp_path):
    """lr 0: the dev loss never improves, so patience 1 stops at the second eval (step 4).
    Its dev losses reach metrics.jsonl, and a rerun of the same command trains no further."""
    cfg = _cfg("configs/sft.py", tiny_model, **{"data.seq_len": "128", "data.batch_size": "8", "train.steps": "10",
                                               "train.lr": "0.0", "run.eval_every": "2", "run.eval_batches": "1",
                                               "run.patience": "1", "run.checkpoint_every": "3"})
    logs = []
    assert [m["step"] for m in Trainer(cfg, tmp_path, log=logs.append).run()] == [1, 2, 3, 4]
    assert any("early stop at step 4" in m for m in logs)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "dev_loss" in m] == [2, 4]
    logs.clear()
    assert Trainer(cfg, tmp_path, log=logs.append).run() == []
    assert any("early-stopped at step 4 already" in m for m in logs)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_periodic_fineval_during_training(tiny_model, tmp_path):
    cfg = _cfg("configs/sft.py", tiny_model, **{"train.steps": "4", "eval.every": "2", "eval.tasks": "fpb",
                                               "eval.limit": "4"})
    history = Trainer(cfg, tmp_path, log=lambda *_: None).run()
    assert "eval/fpb/accuracy" in history[1] and "eval/fpb/accuracy" in history[3]
    for step in (2, 4):
        res = json.loads((tmp_path / "eval" / f"step_{step}" / "results.json").read_text())
        assert res["fpb"]["n"] == 4 and res["fpb"]["accuracy"] == history[step - 1]["eval/fpb/accuracy"]


def test_dpo_raises_reward_accuracy(tiny_model, tmp_path):
    cfg = _cfg("configs/dpo.py", tiny_model, **{"train.steps": "12", "train.lr": "3e-3", "train.warmup": "0",
                                               "data.batch_size": "8"})
    history = Trainer(cfg, tmp_path, log=lambda *_: None).run()
    # policy == reference at the start: rewards zero up to rounding (the policy's log-probs
    # come from the gradient pass, the reference's from a forward pass compiled apart; a
    # prompt-shared pair's sum can differ in its last bit, which a strict > can count)
    assert all(abs(history[0][k]) < 1e-5 for k in ("rewards/chosen", "rewards/rejected", "rewards/margins"))
    assert history[0]["rewards/accuracies"] <= 0.125
    late = [h["rewards/accuracies"] for h in history[-4:]]
    assert sum(late) / len(late) > 0.5 and history[-1]["rewards/margins"] > 0


def test_dpo_with_shared_prompts_equals_separate_rows(tiny_model, tmp_path):
    """train.shared_prompt on the bundled preference pairs: their prompts are shared (rows
    shorter than the two they replace), with train.pack_pairs several pairs share a row
    (fewer rows than pairs), and the losses and metrics of 3 steps equal those of the
    separate rows (fp32; tolerances below). Batches of 16 HH-RLHF pairs (they vary in length, so
    they pack) over the 8 test devices: packed row counts are multiples of 8, and rows of a
    multiple of 256 leave room to pack 16 pairs into 8 of them."""
    over = {"train.steps": "3", "train.lr": "3e-3", "train.warmup": "0", "data.batch_size": "16",
            "data.mixture": "findap_general_preference", "data.seq_len": "512", "train.shared_row_multiple": "256"}
    runs, shapes = {}, {}
    for name, shared, pack in (("packed", "true", "true"), ("shared", "true", "false"), ("apart", "false", "false")):
        logs = []
        trainer = Trainer(_cfg("configs/dpo.py", tiny_model, **over,
                               **{"train.shared_prompt": shared, "train.pack_pairs": pack}),
                          tmp_path / name, log=lambda m: logs.append(str(m)))
        runs[name] = trainer.run()
        shapes[name] = [tuple(map(int, re.search(r"(\d+) rows of (\d+) tokens", m).groups()))
                        for m in logs if m.startswith("preference rows: prompt-shared")]
    # every step ran prompt-shared rows, shorter than the two rows they replace
    assert shapes["shared"] and all(r == 16 and n < 2 * 512 for r, n in shapes["shared"]), shapes
    assert shapes["packed"] and all(r % 8 == 0 and n < 2 * 512 for r, n in shapes["packed"]), shapes
    assert sum(r for r, _ in shapes["packed"]) < sum(r for r, _ in shapes["shared"]), shapes
    assert len(runs["packed"]) == len(runs["shared"]) == len(runs["apart"]) == 3
    # The first step (same parameters) equals the separate rows' within 1e-5: packed, its grad
    # norm differs by ~4e-7. Adam turns such differences into whole-size updates where a
    # gradient is near zero, so at lr 3e-3 they grow ~5x a step (~1e-4 by the third): later
    # steps get 1e-3. Rewards are beta x sums of up to ~1,000 log-probs (|sum| ~ 800): their
    # rounding scales with the sums. (tests/train/test_shared_prompt.py holds two steps of
    # packed and one-pair rows to 1e-5 of the separate rows' parameters.)
    for name in ("packed", "shared"):
        for step, (a, b) in enumerate(zip(runs[name], runs["apart"])):
            sums = 0.1 * max(abs(b["logps/chosen"]), abs(b["logps/rejected"]))
            for k in ("loss", "rewards/margins", "rewards/chosen", "logps/rejected", "grad_norm"):
                scale = max(1.0, abs(b[k]), sums if k.startswith("rewards/") else 0.0)
                assert abs(a[k] - b[k]) <= (1e-5 if step == 0 else 1e-3) * scale, (name, step, k, a[k], b[k])


def test_loss_mixture_mismatch_is_an_error(tiny_model, tmp_path):
    cfg = _cfg("configs/dpo.py", tiny_model, **{"data.mixture": "findap_it", "data.batch_size": "8"})
    with pytest.raises(ValueError, match="does not fit data.mixture"):
        Trainer(cfg, tmp_path)


def test_unwritable_workdir_refuses_to_start(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="work directory is not writable"):
        check_workdir(blocker / "run")  # works as root too, unlike chmod
    with pytest.raises(ValueError, match="URL workdirs are not supported"):
        check_workdir("gs://bucket/run")
    assert not (Path.cwd() / "gs:").exists()


def _train_cmd(model, workdir, steps):
    return [sys.executable, "-m", "findap_jax.cli", "train", f"--config={ROOT / 'configs/sft.py'}",
            "--workdir", str(workdir), f"--config.model.path={model}", "--config.data.seq_len=128",
            f"--config.train.steps={steps}", "--config.train.lr=1e-3", "--config.run.checkpoint_every=1",
            "--config.run.eval_every=0", "--config.run.export_final=false", "--config.run.log_every=1"]


def _losses(workdir):
    by_step = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        by_step[m["step"]] = m["loss"]  # a resumed run rewrites the steps after its checkpoint
    return by_step


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_losses(tiny_model, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    steps = 10
    subprocess.run(_train_cmd(tiny_model, tmp_path / "full", steps), env=env, check=True,
                   capture_output=True, cwd=ROOT)
    proc = subprocess.Popen(_train_cmd(tiny_model, tmp_path / "killed", steps), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.exists() and any(p.name.isdigit() and int(p.name) >= 3
                                                                 for p in ckpts.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert killed_at < steps, "the run finished before it could be killed"
    subprocess.run(_train_cmd(tiny_model, tmp_path / "killed", steps), env=env, check=True,
                   capture_output=True, cwd=ROOT)
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "killed")
    assert sorted(full) == sorted(resumed) == list(range(1, steps + 1))
    assert [resumed[s] for s in range(1, steps + 1)] == [full[s] for s in range(1, steps + 1)]


def test_precomputed_reference_equals_live(tiny_model, tmp_path):
    over = {"train.steps": "3", "train.lr": "3e-3", "train.warmup": "0", "data.batch_size": "8"}
    live = Trainer(_cfg("configs/rpo.py", tiny_model, **over, **{"data.seq_len": "256"}), tmp_path / "live",
                   log=lambda *_: None).run()
    pre = Trainer(_cfg("configs/rpo.py", tiny_model, **over, **{"train.reference": "precomputed",
                                                                "data.seq_len": "256"}),
                  tmp_path / "pre", log=lambda *_: None).run()
    assert (tmp_path / "pre" / "reference_logps.0.json").exists()
    for a, b in zip(live, pre):
        for k in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
            assert abs(a[k] - b[k]) <= 1e-4, (k, a[k], b[k])


def test_resume_on_a_different_mesh(tiny_model, tmp_path):
    over = {"train.steps": "4", "train.lr": "1e-3", "run.checkpoint_every": "2"}
    full = Trainer(_cfg("configs/sft.py", tiny_model, **over), tmp_path / "full", log=lambda *_: None).run()
    # Two steps on fsdp=8 (the schedule still spans 4 steps), then resume on data=2 x fsdp=2 x tensor=2.
    t = Trainer(_cfg("configs/sft.py", tiny_model, **over), tmp_path / "moved", log=lambda *_: None)
    t.cfg.train.steps = 2
    t.run()
    second = _cfg("configs/sft.py", tiny_model, **over,
                  **{"run.mesh": "{'data': 2, 'fsdp': 2, 'tensor': 2}"})
    resumed = Trainer(second, tmp_path / "moved", log=lambda *_: None).run()
    assert [h["step"] for h in resumed] == [3, 4]
    for a, b in zip(full[2:], resumed):
        assert abs(a["loss"] - b["loss"]) <= 1e-5


def test_contaminated_mixture_refuses_to_start(tiny_model, tmp_path):
    from findap_jax.eval.tasks import get_task, load_rows
    leak = tmp_path / "leak.jsonl"
    sentence = load_rows(get_task("fpb"))[3]["text"]
    leak.write_text(json.dumps({"prompt": f"Sentiment? {sentence}", "response": "positive"}) + "\n")
    cfg = _cfg("configs/sft.py", tiny_model, **{"data.tasks": f"{{'finance_it': {{'train': '{leak}'}}}}"})
    with pytest.raises(ValueError, match="contamination: training task finance_it shares 1 of 985 rows of eval task fpb"):
        Trainer(cfg, tmp_path / "w")
    cfg = _cfg("configs/sft.py", tiny_model, **{"eval.every": "5", "eval.tasks": "fpb,nope"})
    with pytest.raises(KeyError, match="unknown eval task 'nope'"):
        Trainer(cfg, tmp_path / "w2")
