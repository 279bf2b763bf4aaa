"""Forward on 8 virtual CPU devices under fsdp/tensor sharding equals one device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from findap_jax.model import Llama, get_preset
from findap_jax.parallel import logical_to_spec, make_mesh, shard_module
from findap_jax.parallel.sharding import batch_shards


@pytest.mark.parametrize("shape", [dict(data=1, fsdp=4, tensor=2), dict(data=2, fsdp=2, tensor=2),
                                   dict(data=1, fsdp=-1, tensor=1)])
def test_sharded_forward_equals_single_device(shape):
    assert jax.device_count() == 8
    cfg = get_preset("tiny").replace(tie_word_embeddings=False)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 24)))
    segs = jnp.asarray(np.repeat([[1] * 10 + [2] * 14], 8, axis=0))
    ref = np.asarray(Llama(cfg, rngs=nnx.Rngs(0))(ids, segment_ids=segs))

    mesh = make_mesh(shape)
    model = shard_module(Llama(cfg, rngs=nnx.Rngs(0)), mesh)
    if mesh.shape["tensor"] == 2:
        assert model.layers.attn.q_proj[...].sharding.spec == P(None, "fsdp", "tensor", None)
    with jax.set_mesh(mesh):
        out = nnx.jit(lambda m, x, s: m(x, segment_ids=s))(model, ids, segs)
    assert out.sharding.spec[0] in (("data", "fsdp"), "fsdp", "data")
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_rules_drop_mesh_axes_that_do_not_divide():
    mesh = make_mesh(dict(data=1, fsdp=4, tensor=2))
    assert logical_to_spec(("embed", "heads", "head_dim"), (576, 9, 64), mesh) == P("fsdp", None, None)
    assert logical_to_spec(("batch", "length"), (8, 16), mesh) == P("fsdp", None)
    assert logical_to_spec(("vocab", "embed"), (256, 64), mesh) == P("tensor", "fsdp")


def test_make_mesh_errors():
    with pytest.raises(ValueError, match="needs 6 devices"):
        make_mesh(dict(data=3, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="at most one axis"):
        make_mesh(dict(data=-1, fsdp=-1))
    with pytest.raises(ValueError, match="unknown mesh axes"):
        make_mesh(dict(model=8))
    for bad in (dict(data=0, fsdp=-1), dict(data=-2, fsdp=-4)):
        with pytest.raises(ValueError, match="sizes must be >= 1, or -1 for the rest"):
            make_mesh(bad)
    with pytest.raises(ValueError, match=r"sharding rule \('embed', 'fsdpp'\): 'fsdpp' is not a mesh axis"):
        logical_to_spec(("embed",), (64,), make_mesh(dict(fsdp=8)), rules=[("embed", "fsdpp")])


def test_an_fsdp_axis_that_shards_nothing_is_reported(tmp_path, caplog):
    """hidden 36 on fsdp 8: every parameter is replicated; the load says so."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from findap_jax.checkpoints.hf import load_hf
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=36, intermediate_size=40, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path)
    del torch
    with caplog.at_level("WARNING"):
        load_hf(tmp_path, mesh=make_mesh(dict(data=1, fsdp=8, tensor=1)))
    assert "the mesh's fsdp axis (8) shards none of 100% of the parameters (hidden_size 36" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_hf(tmp_path, mesh=make_mesh(dict(data=2, fsdp=4, tensor=1)))   # 36 = 4 x 9: sharded
    assert "fsdp axis" not in caplog.text


def test_batch_shards_follow_the_mesh_and_the_rows():
    """How many blocks the batch axis is split into: 1 off a mesh, data x fsdp on one, fewer
    when the rows do not divide (the rules drop the axis, as for parameters)."""
    assert batch_shards(8) == 1
    with jax.set_mesh(make_mesh(dict(data=2, fsdp=2, tensor=2))):
        assert batch_shards(8) == 4
        assert batch_shards(6) == 2
        assert batch_shards(3) == 1
