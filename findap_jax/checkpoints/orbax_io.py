"""Model exports as orbax checkpoints: `findap_model.json` (architecture), the tokenizer
files, and `params/` (an orbax StandardCheckpointer tree). Restored straight onto the
target mesh by giving orbax abstract arrays that carry the target shardings."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
from flax import nnx

from findap_jax.checkpoints.params import abstract_model
from findap_jax.model import Llama, LlamaConfig
from findap_jax.parallel.sharding import state_shardings

MANIFEST = "findap_model.json"


def is_orbax_export(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).exists()


def save_orbax(model: Llama, dst: str | os.PathLike, *, tokenizer=None) -> Path:
    import orbax.checkpoint as ocp

    dst = Path(dst).absolute()
    dst.mkdir(parents=True, exist_ok=True)
    state = nnx.state(model, nnx.Param).to_pure_dict()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(dst / "params", state, force=True)
    ckptr.wait_until_finished()
    if jax.process_index() == 0:  # every process writes its shards above; one writes the rest
        if tokenizer is not None:
            tokenizer.save(dst)
        (dst / MANIFEST).write_text(json.dumps({"format": 1, "config": model.cfg.to_dict()}, indent=2))
    return dst


def load_orbax(path: str | os.PathLike, *, dtype=None, param_dtype=None, mesh=None, rules=None,
               remat: str = "none", attention: str = "xla") -> Llama:
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    manifest = path / MANIFEST
    try:
        meta = json.loads(manifest.read_text())
        cfg = LlamaConfig.from_dict(meta["config"], source=str(manifest))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest}: not a valid findap-jax model manifest ({e})") from None
    dtype = dtype or jnp.float32
    param_dtype = param_dtype or jnp.float32
    model = abstract_model(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat, rules=rules,
                           attention=attention)
    graphdef, abstract = nnx.split(model)
    if mesh is None:
        mesh = jax.sharding.Mesh(jax.devices()[:1], ("fsdp",))
        shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]),
                                 abstract.to_pure_dict())
    else:
        shardings = state_shardings(abstract, mesh, rules).to_pure_dict()
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, param_dtype, sharding=s),
                          abstract.to_pure_dict(), shardings)
    try:
        restored = ocp.StandardCheckpointer().restore(path / "params", target)
    except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged trees
        raise ValueError(f"{path / 'params'}: cannot restore orbax checkpoint: {e}") from e
    nnx.replace_by_pure_dict(abstract, restored)
    return nnx.merge(graphdef, abstract)
