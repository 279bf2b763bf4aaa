"""bench/accelerator_mfu.py: the GPU/TPU MFU check, run here on the tiny preset so a session
lent an accelerator runs a script that already works."""
import math
import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from accelerator_mfu import main, parse_run  # noqa: E402
from results import load_records  # noqa: E402

from findap_jax.model import get_preset  # noqa: E402
from findap_jax.train.metrics import published_peak_flops, train_flops_per_token  # noqa: E402


def test_runs_on_the_tiny_preset_and_reports_consistent_mfu(tmp_path):
    out = tmp_path / "bench.jsonl"
    results = main(["--runs", "tiny:batch=2,seq=64,layers=1,dtype=float32", "--steps", "2",
                    "--peak-n", "256", "--json", str(out)])
    (r,) = results
    (rec,) = load_records(str(out))
    assert rec["script"] == "accelerator_mfu" and rec["args"]["steps"] == 2
    assert rec["figures"]["runs"][0]["tokens_per_s"] == pytest.approx(r["tokens_per_s"])
    cfg = get_preset("tiny").replace(num_layers=1)
    assert r["flops_per_token"] == train_flops_per_token(cfg, 64)
    assert r["params"] == cfg.num_params()
    assert r["tokens_per_s"] == pytest.approx(2 * 64 / r["step_s"])
    assert r["mfu_measured_peak"] == pytest.approx(
        r["flops_per_token"] * r["tokens_per_s"] / (r["measured_peak_tflops"] * 1e12))
    published = published_peak_flops(jax.devices()[0].device_kind)    # None on a CPU
    assert r["mfu_published_peak"] == (None if published is None else pytest.approx(
        r["flops_per_token"] * r["tokens_per_s"] / published))
    assert len(r["losses"]) == 4 and all(math.isfinite(x) for x in r["losses"])


def test_run_specs_are_checked():
    run = parse_run("llama3-8b:layers=4,batch=2,remat=full", "gpu")
    assert (run["layers"], run["batch"], run["remat"], run["attention"], run["head_chunk"]) == \
        (4, 2, "full", "dot_product_attention", 2048)
    assert parse_run("tiny", "cpu")["head_chunk"] == 0     # the trainer's default
    assert parse_run("llama3.2-1b", "tpu")["attention"] == "splash"
    with pytest.raises(ValueError, match="'llama3-8b:layer=4'.*'layer=4'"):
        parse_run("llama3-8b:layer=4", "gpu")
    with pytest.raises(ValueError, match="batch must be an integer"):
        parse_run("tiny:batch=x", "cpu")
    with pytest.raises(KeyError, match="unknown model preset"):
        parse_run("llama9:batch=1", "cpu")


@pytest.mark.parametrize("kind,peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA H100 NVL", None), ("NVIDIA A100-SXM4-80GB", 312e12), ("TPU v5 lite", 197e12),
    ("TPU v5p", 459e12), ("TPU v6 lite", 918e12), ("cpu", None)])
def test_published_peaks_match_device_kinds(kind, peak):
    assert published_peak_flops(kind) == peak
