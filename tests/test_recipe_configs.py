"""Every recipe config under configs/recipes/ loads with load_config (each documented
argument too), names known stages, mixtures, losses and eval tasks, and the paper config
and the ablations carry the settings they claim."""
from pathlib import Path

import pytest

from findap_jax.config import comma_list, load_config
from findap_jax.recipe import TRAIN_STAGES, _stages

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "recipes"

# Arguments each config documents (None = no argument).
ARGS = {
    "findap_llama3_8b.py": [None, "tpu", "gpu"],
    "ablations/mixture_ratios.py": [None, "0", "0.25", "0.75", "1"],
    "ablations/downsample.py": [None, "downsample", "rates"],
    "ablations/dpo_vs_rpo.py": [None, "dpo", "rpo"],
    "ablations/pa_general_pairs.py": [None, "0.5", "1.0"],
}
BAD_ARGS = {
    "findap_llama3_8b.py": "cpu",
    "ablations/mixture_ratios.py": "1.5",
    "ablations/downsample.py": "both",
    "ablations/dpo_vs_rpo.py": "ipo",
    "ablations/pa_general_pairs.py": "0",
}
MIXTURES = {"findap_joint", "findap_joint_downsample", "findap_cpt", "findap_it", "findap_preference"}


def _configs():
    files = sorted(p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob("*.py")
                   if not p.name.startswith("_"))
    return [(f, a) for f in files for a in ARGS.get(f, [None])]


def _load(name, arg=None, overrides=()):
    spec = str(RECIPES / name) + (f":{arg}" if arg else "")
    return load_config(spec, list(overrides))


def test_every_recipe_file_is_covered():
    names = {f for f, _ in _configs()}
    assert {"tiny.py", "findap_smollm2_cpu.py", "findap_llama3_8b.py"} <= names
    for ablation in ("cpt_only", "it_only", "sequential_cpt_then_it", "joint", "mixture_ratios",
                     "downsample", "pa_from_base", "fap_scp", "fap_only", "dpo_vs_rpo"):
        assert f"ablations/{ablation}.py" in names
    assert set(ARGS) <= names and set(BAD_ARGS) <= names


@pytest.mark.parametrize("name,arg", _configs(), ids=lambda x: str(x))
def test_recipe_config_loads_and_is_consistent(name, arg):
    from findap_jax.eval.tasks import get_task
    from findap_jax.train.step import LM_LOSSES, PREF_LOSSES

    cfg = _load(name, arg, ["model=/models/base"])
    assert cfg.model == "/models/base"
    stages = _stages(cfg)   # the recipe's own validation (order, distill before rpo)
    assert stages
    for stage in stages:
        if stage in TRAIN_STAGES:
            sec = cfg[stage]
            assert sec.train.loss in LM_LOSSES
            assert sec.data.mixture in MIXTURES
            assert sec.data.batch_size > 0 and sec.data.seq_len > 0 and sec.train.steps > 0
        elif stage == "rpo":
            assert cfg.rpo.train.loss in PREF_LOSSES
            assert cfg.rpo.data.pack is False
    for task in comma_list(cfg.eval.tasks):
        get_task(task.split(":")[0])
    # A typo in an override is an error naming the key.
    with pytest.raises(KeyError, match="cpt_it.train.lrr"):
        _load(name, arg, ["cpt_it.train.lrr=1e-5"])


@pytest.mark.parametrize("name", sorted(BAD_ARGS))
def test_bad_argument_is_an_error(name):
    with pytest.raises(ValueError, match=name.split("/")[-1][:-3]):
        _load(name, BAD_ARGS[name])


@pytest.mark.parametrize("arg,mesh,devices", [("tpu", (1, 16, 2), 32), ("gpu", (1, 16, 1), 16)])
def test_llama3_8b_paper_settings(arg, mesh, devices):
    cfg = _load("findap_llama3_8b.py", arg)
    assert cfg.model == ""   # the user passes --config.model
    assert cfg.stages == "cpt_it,cpt_it_2,distill,rpo"
    assert (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) == mesh
    assert cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor == devices
    for name, steps, warmup in (("cpt_it", 30000, 0.1), ("cpt_it_2", 12969, 0.5)):
        s = cfg[name]
        assert (s.data.seq_len, s.data.batch_size, s.data.pack) == (8000, 16, True)
        assert s.data.seq_len * s.data.batch_size == 128_000
        assert s.data.batch_size % (cfg.mesh.data * cfg.mesh.fsdp) == 0
        assert s.data.mixture == "findap_joint"
        assert dict(s.data.joint) == dict(cpt_rate=0.5, cpt_finance_share=0.5, it_finance_share=0.2)
        assert (s.train.lr, s.train.warmup, s.train.steps) == (5e-6, warmup, steps)
        assert (s.train.weight_decay, s.train.b1, s.train.b2) == (0.1, 0.9, 0.95)
        assert s.run.eval_every > 0 and s.run.patience > 0 and s.run.eval_mixture
        assert steps * 128_000 >= {"cpt_it": 3.84e9, "cpt_it_2": 1.66e9}[name] > (steps - 1) * 128_000
    for name in ("cpt_it", "cpt_it_2", "rpo"):
        m = cfg[name].model
        assert (m.dtype, m.param_dtype, m.remat) == ("bfloat16", "float32", "full")
        assert m.attention == {"tpu": "splash", "gpu": "xla"}[arg]
    r = cfg.rpo
    assert r.train.shared_prompt == (r.model.attention != "splash")   # the trainer refuses both at once
    assert (r.train.loss, r.train.lr, r.train.warmup, r.train.beta, r.train.alpha) == ("rpo", 5e-7, 0.1, 0.1, 1.0)
    assert (r.data.seq_len, r.data.batch_size, r.data.pack) == (2048, 16, False)
    assert r.train.steps == 751 and 751 * 32768 >= 24.6e6 > 750 * 32768
    assert r.data.batch_size % (cfg.mesh.data * cfg.mesh.fsdp) == 0
    assert cfg.distilled_share == 1.0
    assert cfg.distill.dtype == "bfloat16"


def test_stage1_ablations_share_one_budget():
    base = _load("findap_smollm2_cpu.py").cpt_it
    budget = base.train.steps * base.data.batch_size * base.data.seq_len

    def stage1(cfg):
        return [cfg[s] for s in _stages(cfg)]

    expect = {"cpt_only.py": ["findap_cpt"], "it_only.py": ["findap_it"], "joint.py": ["findap_joint"],
              "sequential_cpt_then_it.py": ["findap_cpt", "findap_it"],
              "mixture_ratios.py": ["findap_joint"], "downsample.py": ["findap_joint_downsample"]}
    for name, mixtures in expect.items():
        cfg = _load(f"ablations/{name}")
        secs = stage1(cfg)
        assert [s.data.mixture for s in secs] == mixtures, name
        assert sum(s.train.steps * s.data.batch_size * s.data.seq_len for s in secs) == budget, name
        assert "distill" not in _stages(cfg) and "cfa_mini" in cfg.eval.tasks
    seq = _load("ablations/sequential_cpt_then_it.py")
    assert seq.cpt_it_2.data.seq_len == seq.cpt_it.data.seq_len and seq.cpt_it_2.train.lr == seq.cpt_it.train.lr
    assert _load("ablations/joint.py").cpt_it.data.joint.cpt_rate == 0.5
    assert _load("ablations/mixture_ratios.py", "0.25").cpt_it.data.joint.cpt_rate == 0.25
    assert _load("ablations/downsample.py", "rates").cpt_it.data.mixture == "findap_joint"


def test_pa_ablations():
    base = _load("ablations/pa_from_base.py")
    assert _stages(base) == ["distill", "rpo"]   # the recipe uses cfg.model as the stage-1 model
    assert _load("ablations/dpo_vs_rpo.py", "dpo").rpo.train.loss == "dpo"
    assert _load("ablations/dpo_vs_rpo.py").rpo.train.loss == "rpo"
    assert _stages(_load("ablations/fap_scp.py")) == ["cpt_it", "distill", "rpo"]
    assert _load("ablations/fap_scp.py").distill.scp and not _load("ablations/fap_only.py").distill.scp
    mixed = _load("ablations/pa_general_pairs.py", "0.25")
    assert mixed.distilled_share == 0.25 and mixed.general_pairs == "findap_general_preference"
