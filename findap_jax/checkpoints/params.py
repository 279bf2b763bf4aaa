"""Build a `Llama` from host arrays in our layout, and read them back out.

Every loader (HF safetensors, GGUF, orbax export) produces a pure dict of numpy arrays in
our layout; `build_model` checks shapes against the architecture, casts, places the
arrays on the mesh by logical axes and merges them into a model. No random init is run.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from findap_jax.model import Llama, LlamaConfig
from findap_jax.parallel.sharding import state_shardings


def abstract_model(cfg: LlamaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                   remat: str = "none", rules=None, attention: str = "xla") -> Llama:
    return nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype,
                                        remat=remat, rules=rules, attention=attention))


def expected_shapes(cfg: LlamaConfig) -> dict:
    """Pure dict of ShapeDtypeStructs of every parameter."""
    return nnx.state(abstract_model(cfg)).to_pure_dict()


def _flat(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _warn_if_fsdp_shards_little(cfg, specs: dict, shardings: dict, mesh, source: str) -> None:
    """Sharding drops a mesh axis that does not divide a dimension (odd shapes replicate rather
    than fail to compile); when that leaves most parameter bytes off an fsdp axis of size > 1,
    FSDP has silently become data parallelism (an 8B model whole on every device). Say so."""
    f = dict(mesh.shape).get("fsdp", 1)
    if f <= 1:
        return
    sizes = {p: int(np.prod(s.shape)) for p, s in specs.items()}

    def on_fsdp(spec) -> bool:
        return any(e == "fsdp" or (isinstance(e, tuple) and "fsdp" in e) for e in spec if e is not None)
    off = sum(n for p, n in sizes.items() if not on_fsdp(shardings[p].spec))
    if off > 0.5 * sum(sizes.values()):
        logging.getLogger(__name__).warning(
            "%s: the mesh's fsdp axis (%d) shards none of %.0f%% of the parameters (hidden_size %d is "
            "not a multiple of it?): they are replicated on every device; pick an fsdp size that "
            "divides the model's dimensions", source, f, 100 * off / sum(sizes.values()), cfg.hidden_size)


def build_model(cfg: LlamaConfig, arrays: dict, *, source: str, dtype=jnp.float32,
                param_dtype=jnp.float32, mesh=None, rules=None, remat: str = "none",
                attention: str = "xla", names: dict | None = None) -> Llama:
    """Merge host arrays into a model. `names` maps our paths to source tensor names
    so shape errors point at the tensor in the file."""
    model = abstract_model(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat, rules=rules,
                           attention=attention)
    graphdef, abstract = nnx.split(model)
    want = dict(_flat(abstract.to_pure_dict()))
    have = dict(_flat(arrays))
    for path in want:
        if path not in have:
            label = (names or {}).get(path, ".".join(map(str, path)))
            raise ValueError(f"{source}: missing tensor {label}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise ValueError(f"{source}: unexpected parameters {['.'.join(map(str, p)) for p in extra]}")
    for path, spec in want.items():
        if tuple(have[path].shape) != tuple(spec.shape):
            label = (names or {}).get(path, ".".join(map(str, path)))
            raise ValueError(f"{source}: tensor {label} has shape {tuple(have[path].shape)}, "
                             f"expected {tuple(spec.shape)} for this config")
    shardings = None
    if mesh is not None:
        shardings = dict(_flat(state_shardings(abstract, mesh, rules).to_pure_dict()))
        _warn_if_fsdp_shards_little(cfg, want, shardings, mesh, source)

    def place(path, a):
        a = np.asarray(a).astype(jnp.dtype(param_dtype))
        return jax.device_put(a, shardings[path]) if shardings else jnp.asarray(a)

    pure = abstract.to_pure_dict()
    for path in want:
        node = pure
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = place(path, have[path])
    nnx.replace_by_pure_dict(abstract, pure)
    return nnx.merge(graphdef, abstract)


def host_arrays(model: Llama) -> dict:
    """Pure dict of numpy arrays (gathered to host) of the model's parameters."""
    pure = nnx.state(model, nnx.Param).to_pure_dict()
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), pure)
