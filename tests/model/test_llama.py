"""Model structure: presets, packed segments, remat, dtypes, logical axes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from findap_jax.checkpoints.params import abstract_model
from findap_jax.model import PRESETS, Llama, LlamaConfig, get_preset

# Parameter counts as published (safetensors total / model cards of each HF repo).
PUBLISHED = {"smollm2-135m": 134_515_008, "llama3-8b": 8_030_261_248,
             "llama3.2-1b": 1_235_814_400, "llama3-70b": 70_553_706_496}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts(name):
    cfg = get_preset(name)
    assert cfg.num_params() == PUBLISHED[name]
    state = nnx.state(abstract_model(cfg), nnx.Param)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state)) == PUBLISHED[name]


def test_every_parameter_has_logical_axes_of_its_rank():
    for name in PRESETS:
        state = nnx.state(abstract_model(get_preset(name)), nnx.Param)
        for path, v in jax.tree_util.tree_leaves_with_path(
                state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
            axes = v.get_metadata()["out_sharding"]
            assert len(axes) == len(v.shape), (name, path)


def test_packed_segments_equal_separate_documents():
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, cfg.vocab_size, 9), rng.integers(0, cfg.vocab_size, 7)
    packed = jnp.asarray(np.concatenate([a, b])[None])
    segs = jnp.asarray([[1] * 9 + [2] * 7])
    pos = jnp.asarray([list(range(9)) + list(range(7))])
    out = np.asarray(model(packed, positions=pos, segment_ids=segs))
    np.testing.assert_allclose(out[0, :9], np.asarray(model(jnp.asarray(a[None])))[0], atol=1e-5)
    np.testing.assert_allclose(out[0, 9:], np.asarray(model(jnp.asarray(b[None])))[0], atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
def test_remat_policies_keep_values_and_grads(remat):
    cfg = get_preset("tiny")
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12)))

    def loss(m):
        return jnp.mean(jax.nn.logsumexp(m(ids), axis=-1))

    base, other = Llama(cfg, rngs=nnx.Rngs(0)), Llama(cfg, rngs=nnx.Rngs(0), remat=remat)
    l0, g0 = nnx.value_and_grad(loss)(base)
    l1, g1 = nnx.value_and_grad(loss)(other)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(nnx.state(g0)), jax.tree.leaves(nnx.state(g1))):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_bf16_compute_with_fp32_master_weights():
    cfg = get_preset("tiny")
    model = Llama(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32)
    ref = Llama(cfg, rngs=nnx.Rngs(0))
    ids = jnp.arange(16)[None]
    out = model(ids)
    assert model.embed[...].dtype == jnp.float32 and out.dtype == jnp.float32
    assert np.abs(np.asarray(out) - np.asarray(ref(ids))).max() < 0.05


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        LlamaConfig(vocab_size=8, hidden_size=12, intermediate_size=8, num_layers=1,
                    num_heads=3, num_kv_heads=2)
    with pytest.raises(ValueError, match="unsupported rope_scaling"):
        get_preset("tiny").replace(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(KeyError, match="unknown model preset"):
        get_preset("gpt5")
    with pytest.raises(ValueError, match="unknown LlamaConfig field"):
        LlamaConfig.from_dict({"vocab_size": 8, "hiden_size": 4}, source="x.json")


@pytest.mark.parametrize("variant", ["gqa_untied", "mha_tied"])
def test_gradients_equal_transformers(tmp_path, variant):
    """Every weight's gradient of a next-token cross-entropy equals torch autograd through
    transformers' LlamaForCausalLM (fp32, atol 1e-5 relative to the largest entry): the
    hand-written backward passes (matmul, RMSNorm, SwiGLU) and the recomputation inside
    each layer change no gradient."""
    import torch

    from findap_jax.checkpoints.hf import load_hf, to_hf_tensors
    from tests.helpers import save_random_hf_llama

    ref = save_random_hf_llama(tmp_path, variant)
    ids = np.random.default_rng(3).integers(0, 97, (2, 24))
    ref.zero_grad()
    ref(torch.as_tensor(ids), labels=torch.as_tensor(ids)).loss.backward()
    theirs = {n: p.grad.numpy() for n, p in ref.named_parameters()}

    model = load_hf(tmp_path)

    def loss(m):
        logp = jax.nn.log_softmax(m(jnp.asarray(ids))[:, :-1].astype(jnp.float32), -1)
        return -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(ids)[:, 1:, None], -1))

    grads = nnx.grad(loss)(model)
    nnx.update(model, grads)
    ours = to_hf_tensors(model)
    assert set(ours) == set(theirs)    # every trainable tensor, the tied head once
    for name, g in ours.items():
        scale = max(float(np.abs(theirs[name]).max()), 1e-3)
        np.testing.assert_allclose(g / scale, theirs[name] / scale, atol=1e-5, err_msg=name)
