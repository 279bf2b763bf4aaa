"""Config files and dotted overrides: types, unknown keys with near matches."""
import pytest

from findap_jax.config import load_config, split_config_args

CFG = "configs/joint_cpt_it.py"


def test_overrides_are_typed():
    cfg = load_config(CFG, ["data.seq_len=1024", "data.pack=false", "data.joint.cpt_rate=0.3",
                            "model.path=/tmp/m", "model.chat_format=llama3"])
    assert cfg.data.seq_len == 1024 and cfg.data.pack is False
    assert cfg.data.joint.cpt_rate == 0.3 and cfg.model.path == "/tmp/m"
    assert cfg.model.chat_format == "llama3"


def test_unknown_key_lists_near_matches():
    with pytest.raises(KeyError, match=r"unknown config key 'data.seq_lenn'.*data\.seq_len"):
        load_config(CFG, ["data.seq_lenn=3"])
    with pytest.raises(KeyError, match="unknown config key 'trainer.lr'"):
        load_config(CFG, ["trainer.lr=3"])


def test_bad_values_and_locked_result():
    with pytest.raises(ValueError, match="config key 'data.seq_len'"):
        load_config(CFG, ["data.seq_len=long"])
    with pytest.raises(ValueError, match="expected a boolean"):
        load_config(CFG, ["data.pack=maybe"])
    cfg = load_config(CFG)
    with pytest.raises(AttributeError):
        cfg.data.new_field = 1


def test_split_config_args():
    spec, over, rest = split_config_args(["data", "inspect", "--config=c.py:x", "--config.a.b=1",
                                          "--config.c", "2", "--rows", "3"])
    assert spec == "c.py:x" and over == ["a.b=1", "c=2"] and rest == ["data", "inspect", "--rows", "3"]
