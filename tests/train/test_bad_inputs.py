"""Bad inputs the trainer must refuse with a message that names the culprit, losing
nothing already written: a tokenizer larger than the model's vocab, a damaged checkpoint,
a run whose every step is non-finite, too little free disk for a checkpoint."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from findap_jax.config import load_config
from findap_jax.train.checkpointing import COMMIT_MARKER
from findap_jax.train.trainer import DivergenceError, Trainer, tree_bytes
from tests.helpers import save_random_hf_llama, save_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def _cfg(model, **over):
    base = {"model.path": str(model), "data.seq_len": "128", "train.steps": "2", "train.lr": "1e-3",
            "train.warmup": "0", "run.log_every": "100", "run.checkpoint_every": "1",
            "run.eval_every": "0", "run.export_final": "false", "run.async_checkpoint": "false"}
    base.update(over)
    return load_config(str(ROOT / "configs/sft.py"), [f"{k}={v}" for k, v in base.items()])


def test_tokenizer_larger_than_model_vocab_is_refused(tmp_path):
    model = tmp_path / "small_vocab"
    save_random_hf_llama(model, "gqa_untied", vocab=200)
    save_tiny_tokenizer(model, "chatml", vocab_size=300)
    with pytest.raises(ValueError, match=r"tokenizer has 300 tokens but the model's vocab_size is 200"):
        Trainer(_cfg(model), tmp_path / "run", log=lambda *_: None)


def test_damaged_checkpoint_names_its_step_and_keeps_the_files(tiny_chat_model, tmp_path):
    Trainer(_cfg(tiny_chat_model), tmp_path, log=lambda *_: None).run()
    step_dir = tmp_path / "checkpoints" / "2"
    assert step_dir.is_dir()
    files = sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 0)
    before = {p: p.stat().st_size for p in files}
    for p in files:                # zero every data file of the latest checkpoint
        p.write_bytes(b"\0" * p.stat().st_size)
    with pytest.raises(ValueError, match=r"2: cannot restore checkpoint"):
        Trainer(_cfg(tiny_chat_model, **{"train.steps": "3"}), tmp_path, log=lambda *_: None).run()
    assert {p: p.stat().st_size for p in files} == before   # nothing deleted or rewritten
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_every_step_non_finite_stops_with_divergence_error(tiny_chat_model, tmp_path):
    """The step's own NaN detection is tested in test_step; here every step reports a
    non-finite loss and the loop must stop after run.max_nonfinite, keeping the checkpoint."""
    trainer = Trainer(_cfg(tiny_chat_model, **{"train.steps": "10", "run.max_nonfinite": "2"}),
                      tmp_path, log=lambda *_: None)
    real = trainer.step_fn

    def non_finite(*args):
        state, metrics = real(*args)
        return state, dict(metrics, finite=np.zeros((), bool))   # (args[0] was donated)
    trainer.step_fn = non_finite
    with pytest.raises(DivergenceError, match=r"2 non-finite steps; stopping"):
        trainer.run()


def test_too_little_free_disk_is_refused_before_anything_is_written(tiny_chat_model, tmp_path, monkeypatch):
    first = Trainer(_cfg(tiny_chat_model), tmp_path, log=lambda *_: None)
    first.run()
    weights = tree_bytes(first.state.params)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert (tmp_path / "metrics.jsonl") in before and (tmp_path / "checkpoints" / "2" / COMMIT_MARKER) in before
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=5000))
    with pytest.raises(OSError, match=r"not enough free disk space: 4\.9 KiB free \(5000 bytes\)") as refused:
        Trainer(_cfg(tiny_chat_model, **{"train.steps": "3", "run.export_final": "true"}), tmp_path)
    msg = str(refused.value)
    assert msg.startswith(f"{tmp_path}: ") and "run.min_free_bytes" in msg
    # A checkpoint holds the weights and AdamW's two moments, the export the weights again; x1.2.
    need = int(re.search(r"need about [\d.]+ \w+ \((\d+) bytes\)", msg).group(1))
    assert int(1.2 * 4 * weights) <= need <= int(1.2 * 4 * weights) + 100, (need, weights)
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    with pytest.raises(OSError, match=r"need about 5\.9 KiB \(6000 bytes\)"):   # an explicit floor
        Trainer(_cfg(tiny_chat_model, **{"run.min_free_bytes": "6000"}), tmp_path)
    Trainer(_cfg(tiny_chat_model, **{"run.min_free_bytes": "0"}), tmp_path)   # 0: no check
