"""`findap-jax convert` and `generate` end to end on a tiny model."""
import numpy as np
import pytest

from findap_jax import load_pretrained
from findap_jax.checkpoints import safetensors_io as st
from findap_jax.cli import main
from tests.helpers import save_random_hf_llama, save_tiny_tokenizer


def test_convert_hf_orbax_hf_and_generate(tmp_path, capsys):
    src = tmp_path / "hf"
    save_random_hf_llama(src, "gqa_untied", vocab=300)
    save_tiny_tokenizer(src, "chatml")
    assert main(["convert", "--src", str(src), "--dst", str(tmp_path / "orb"), "--to", "orbax"]) == 0
    assert main(["convert", "--src", str(tmp_path / "orb"), "--dst", str(tmp_path / "back")]) == 0
    a, b = st.load_file(src / "model.safetensors"), st.load_file(tmp_path / "back" / "model.safetensors")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "orb"), "--prompt", "Revenue rose",
                 "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out.strip()
    model, tok = load_pretrained(src)
    from findap_jax import generate
    assert printed == generate(model, tok, ["Revenue rose"], max_new_tokens=5)[0].strip()


def test_cli_reports_bad_paths(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "no such model file or directory" in capsys.readouterr().err


def test_options_a_verb_would_ignore_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "--src", "x", "--dst", "y", "--config.no_such_key=1"])
    assert e.value.code == 2 and "convert takes no --config or --config.* options" in capsys.readouterr().err
    rc = main(["convert", "--src", str(tmp_path / "none"), "--dst", str(tmp_path / "o"), "--to", "orbax",
               "--save-dtype", "bfloat16"])
    assert rc == 2 and "--save-dtype applies to HF exports" in capsys.readouterr().err


def test_bf16_load(tmp_path):
    save_random_hf_llama(tmp_path, "mha_tied")
    save_tiny_tokenizer(tmp_path)
    model, _ = load_pretrained(tmp_path, dtype="bfloat16")
    assert model.embed[...].dtype == np.dtype("bfloat16")
