"""Config files and dotted overrides: types, unknown keys with near matches (in overrides
and in config files), open maps (task specs, rates) replaced or extended."""
import pytest

from findap_jax import defaults
from findap_jax.config import load_config, split_config_args
from findap_jax.data.pipeline import task_specs

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


def test_integer_keys_take_whole_numbers_only():
    cfg = load_config(CFG, ["data.seq_len=1e3", "train.steps=20.0", "data.seed=9007199254740993"])
    assert (cfg.data.seq_len, cfg.train.steps, cfg.data.seed) == (1000, 20, 9007199254740993)
    for bad in ("data.seq_len=512.9", "train.steps=0.5", "train.grad_accum=2.5"):
        with pytest.raises(ValueError, match=r"config key '.*': expected an integer, got"):
            load_config(CFG, [bad])


def test_unknown_keys_in_config_files_are_errors(tmp_path):
    with pytest.raises(KeyError, match=r"on_bad_recrod.*Did you mean \"on_bad_record\""):
        defaults.experiment_config(data=dict(on_bad_recrod="skip"))
    with pytest.raises(KeyError, match="unknown section 'trainer'"):
        defaults.experiment_config(trainer=dict(lr=1.0))
    f = tmp_path / "typo.py"
    f.write_text("from findap_jax import defaults\n\ndef get_config():\n    cfg = defaults.experiment_config()\n"
                 "    cfg.data.update(seq_length=1024)\n    return cfg\n")
    with pytest.raises(KeyError, match="seq_length"):
        load_config(str(f))
    f.write_text("from findap_jax import defaults\n\ndef get_config():\n    cfg = defaults.distill_config()\n"
                 "    cfg.max_new_token = 9\n    return cfg\n")
    with pytest.raises(AttributeError, match="max_new_token"):
        load_config(str(f))


def test_open_maps_are_replaced_or_extended(tmp_path):
    f = tmp_path / "tasks.py"
    f.write_text("from findap_jax import defaults\n\ndef get_config():\n    cfg = defaults.experiment_config()\n"
                 "    cfg.data.tasks.mine = dict(kind='cpt', train='a.txt')\n"
                 "    cfg.data.rates.update(finance_it=1.0, general_it=0.5)\n    return cfg\n")
    cfg = load_config(str(f), ['data.rates={"finance_it": 1.0}', "data.rates.mine=0.25",
                               'data.tasks={"extra": {"kind": "cpt", "train": "b.txt"}}'])
    assert cfg.data.rates.to_dict() == {"finance_it": 1.0, "mine": 0.25}   # general_it gone
    assert list(cfg.data.tasks) == ["extra"]
    with pytest.raises(KeyError, match=r"unknown config key 'eval\.tasks\.xyz'"):   # a string, not a map
        load_config(str(f), ["eval.tasks.xyz=1"])
    bad = load_config(str(f), ['data.tasks={"mine": {"kind": "cpt", "trian": "a.txt"}}'])
    with pytest.raises(ValueError, match=r"data\.tasks\.mine: unknown key\(s\) \['trian'\].*did you mean 'train'"):
        task_specs(bad.data)


def test_split_config_args():
    spec, over, rest = split_config_args(["data", "inspect", "--config=c.py:x", "--config.a.b=1",
                                          "--config.c", "2", "--rows", "3"])
    assert spec == "c.py:x" and over == ["a.b=1", "c=2"] and rest == ["data", "inspect", "--rows", "3"]
