"""`findap-jax data inspect` on the bundled corpora with a tiny tokenizer."""
from findap_jax.cli import main
from findap_jax.data.registry import default_specs
from findap_jax.eval.tasks import TASKS
from tests.helpers import save_tiny_tokenizer


def test_data_inspect_reports_counts_shares_and_rows(tmp_path, capsys):
    save_tiny_tokenizer(tmp_path, "chatml")
    rc = main(["data", "inspect", "--config=configs/joint_cpt_it.py", f"--config.model.path={tmp_path}",
               "--config.data.seq_len=256", "--examples", "400", "--batches", "2", "--rows", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "findap_finance_it" in out and "realised" in out and "loss-mask coverage" in out
    assert "«" in out and "<|im_end|>»" in out  # assistant spans end with the trained EOS
    # the 13-gram table: every training task against every registered eval task, all clean
    table = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    pairs = {tuple(c.strip() for c in line.strip("|").split("|")[:3]) for line in table}
    assert pairs == {(t, e, "0") for t in default_specs() for e in TASKS}


def test_data_inspect_unknown_override(capsys):
    assert main(["data", "inspect", "--config=configs/joint_cpt_it.py", "--config.data.bogus=1"]) == 2
    assert "unknown config key 'data.bogus'" in capsys.readouterr().err
