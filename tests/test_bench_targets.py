"""bench/targets.py: the performance targets are judged from the records the bench scripts
append, and a real train_step run writes a record it can read."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
from results import append_record, load_records  # noqa: E402
from targets import SHAPES, main, target_rows  # noqa: E402


def _step(s, n_tok):
    return {"s_per_step": s, "tokens_per_s": n_tok / s}


def _train(path, dtype, steps, per_round=None, **args):
    """A train_step record: steps = {kind: {stack: seconds}} at the targets' shapes."""
    figs = {k: {name: _step(t, 2048 * (1 if k == "lm" else 2)) for name, t in v.items()} for k, v in steps.items()}
    append_record(path, "train_step", dict(SHAPES, dtype=dtype, param_dtype="float32", weighted=1.0, **args),
                  {"steps": figs, "per_round": per_round or {}})


def _by_target(rows):
    out = {}
    for r in rows:
        out.setdefault(r["target"], []).append(r)
    return out


def test_targets_are_judged_from_records(tmp_path):
    f = str(tmp_path / "bench.jsonl")
    # SFT: ours 10 s vs torch 12.5 s -> 1.25 (met); DPO live ref: 21 s -> 21/10/2 = 1.05 per sequence (met)
    _train(f, "float32", {"lm": {"findap-jax": 10.0, "transformers": 12.5},
                          "dpo": {"findap-jax": 21.0, "transformers": 30.0},
                          "dpo-pre": {"findap-jax": 22.0, "transformers": 25.0},
                          "rpo": {"findap-jax": 23.0, "transformers": 33.0}},
           per_round={"lm": [1.2, 1.3, 1.28]})
    _train(f, "bfloat16", {"lm": {"findap-jax": 5.0, "transformers": 4.0}})
    # ours training the answers only (the head on 39% of the positions) is not the peers' step: ignored
    append_record(f, "train_step", dict(SHAPES, dtype="float32", param_dtype="float32", weighted=0.39),
                  {"steps": {"lm": {"findap-jax": _step(1.0, 2048), "transformers": _step(12.5, 2048)}}})
    # the 1B preset is not at the targets' shapes: only its own (reported) row reads it
    append_record(f, "train_step", dict(SHAPES, preset="llama3.2-1b", batch=1, dtype="bfloat16",
                                        param_dtype="bfloat16"),
                  {"steps": {"lm": {"findap-jax": dict(_step(1.0, 512), mfu=0.47), "transformers": _step(100.0, 512)}}})
    decode_args = {"prompt": 64, "new": 128}
    append_record(f, "decode", decode_args, {"batches": {
        "1": {"findap-jax": {"tokens_per_s": 40.0, "ttft_s": 0.1}, "transformers": {"tokens_per_s": 15.0, "ttft_s": 0.2}},
        "8": {"findap-jax": {"tokens_per_s": 150.0, "ttft_s": 0.8}, "transformers": {"tokens_per_s": 70.0, "ttft_s": 0.7}}}})
    append_record(f, "decode", dict(decode_args, new=4), {"batches": {   # not the target's setting: ignored
        "1": {"findap-jax": {"tokens_per_s": 1.0, "ttft_s": 0.1}, "transformers": {"tokens_per_s": 15.0, "ttft_s": 0.2}}}})
    append_record(f, "data_pipeline", {"mixture": "findap_joint"}, {"tokens_per_s": 500_000.0})
    append_record(f, "tunix_peer", dict(SHAPES, kinds="dpo"), {   # the DPO leg alone, as on a 23 GiB machine
        "steps": {"dpo": {"tunix": _step(30.0, 4096), "findap-jax": _step(20.0, 4096)}},
        "per_round_median": {"dpo": 1.4}})
    rows = _by_target(target_rows(load_records(f)))

    (sft,) = rows["SFT/CPT tokens/s >= 1.2x transformers (fp32)"]
    assert (sft["ours"], sft["peer"], sft["ratio"], sft["status"]) == ("204.8", "163.8", "1.25 (per round 1.28)", "met")
    (dpo_seq,) = rows["DPO / SFT time per sequence, live reference <= 1.35"]
    assert (dpo_seq["ours"], dpo_seq["peer"], dpo_seq["status"]) == ("1.05", "1.20", "met")
    (pre,) = rows["DPO / SFT time per sequence, precomputed reference <= 1.05"]
    assert (pre["ours"], pre["status"]) == ("1.10", "not met")
    (rpo,) = rows["RPO / SFT time per sequence (no target)"]
    assert (rpo["ours"], rpo["peer"], rpo["status"]) == ("1.15", "1.32", "reported")
    (dpo,) = rows["DPO tokens/s >= 1.5x transformers + TRL-style DPO (live reference)"]
    assert (dpo["ratio"], dpo["status"]) == ("1.43", "not met")
    (bf16,) = rows["bf16 compute: best vs best (no target)"]    # ours bf16 409.6 vs torch bf16 512
    assert (bf16["ours"], bf16["peer"], bf16["ratio"], bf16["status"]) == \
        ("409.6 (bfloat16)", "512.0 (bfloat16)", "0.80", "reported")
    b1, b8 = rows["greedy decode tokens/s >= 2x transformers generate, TTFT no worse"]
    assert (b1["ratio"], b1["status"]) == ("2.67", "met")
    assert (b8["ratio"], b8["status"]) == ("2.14", "not met")      # faster, but a slower first token
    (pipe,) = rows["input pipeline tokens/s >= 10x the trainer's"]   # against the fastest step, bf16's 409.6
    assert (pipe["ratio"], pipe["status"]) == ("1,221", "met")
    (tunix_dpo,) = rows["DPO tokens/s vs Tunix's DPOTrainer, live reference (no target)"]
    assert (tunix_dpo["ratio"], tunix_dpo["status"]) == ("1.50 (per round 1.40)", "reported")
    (big,) = rows["train step of the ~1B preset on this CPU (no target)"]
    assert (big["run"], big["ours"], big["status"]) == \
        ("lm, batch 1 x 512, bfloat16 / bfloat16 weights", "512.0 tokens/s, MFU 0.47", "reported")
    for target in ("SFT/CPT tokens/s >= 2x Tunix (fp32)",
                   "MFU >= 50% on an H100-class accelerator (1B preset, Llama-3-8B layers)"):
        (row,) = rows[target]
        assert row["status"] == "not measured" and row["ours"] == ""


def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path):
    f = tmp_path / "bench.jsonl"
    append_record(str(f), "data_pipeline", {}, {"tokens_per_s": 1.0})
    with open(f, "a", encoding="utf-8") as fh:
        fh.write('{"script": "decode", "args": {}}\n')
    with pytest.raises(ValueError, match=r"bench\.jsonl:2: a bench record needs figures"):
        load_records(str(f))
    f.write_text("not json\n")
    with pytest.raises(ValueError, match=r"bench\.jsonl:1: invalid JSON"):
        main([str(f)])


def test_train_step_writes_a_record_the_targets_read(tmp_path, capsys):
    """The real script at the tiny preset, both stacks: the record's keys are the ones
    targets.py reads, and its figures come out in the table."""
    f = tmp_path / "bench.jsonl"
    subprocess.run([sys.executable, str(BENCH / "train_step.py"), "--preset", "tiny", "--seq", "64", "--batch", "2",
                    "--steps", "1", "--kinds", "lm,dpo", "--json", str(f)], check=True, capture_output=True)
    (rec,) = load_records(str(f))
    steps = rec["figures"]["steps"]
    assert set(steps) == {"lm", "dpo"} and set(steps["lm"]) == {"findap-jax", "transformers"}
    assert len(rec["figures"]["per_round"]["lm"]) == 1
    assert 0 < steps["lm"]["findap-jax"]["mfu"] == steps["lm"]["findap-jax"]["mfu_own"]   # ours' own library is jax
    rows = _by_target(target_rows([rec], {"preset": "tiny", "seq": 64, "batch": 2}))
    (sft,) = rows["SFT/CPT tokens/s >= 1.2x transformers (fp32)"]
    ours, theirs = steps["lm"]["findap-jax"]["tokens_per_s"], steps["lm"]["transformers"]["tokens_per_s"]
    assert sft["ratio"].startswith(f"{ours / theirs:.2f}") and sft["status"] in ("met", "not met")
    (seq,) = rows["DPO / SFT time per sequence, live reference <= 1.35"]
    assert seq["ours"] == f"{steps['dpo']['findap-jax']['s_per_step'] / steps['lm']['findap-jax']['s_per_step'] / 2:.2f}"
    main([str(f), "--preset", "tiny", "--seq", "64", "--batch", "2"])
    assert "| SFT/CPT tokens/s >= 1.2x transformers (fp32) | train_step float32 |" in capsys.readouterr().out


def test_the_kept_records_of_a_real_run_are_read():
    """bench/records holds the raw records behind the README's figures: targets.py must keep
    reading them (every target but the accelerator's is measured there)."""
    path = BENCH / "records" / "session27_xeon_amx.jsonl"
    rows = target_rows(load_records(str(path)))
    assert [r["target"] for r in rows if r["status"] == "not measured"] == \
        ["MFU >= 50% on an H100-class accelerator (1B preset, Llama-3-8B layers)"]
    (rec,) = [r for r in load_records(str(path)) if r["script"] == "dpo_real_pairs"]
    (real,) = [r for r in rows if r["run"].startswith("dpo_real_pairs")]
    assert real["ours"] == f"{rec['figures']['tokens_per_s']['findap-jax']:.1f}"
