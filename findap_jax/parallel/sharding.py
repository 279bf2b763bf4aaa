"""Logical axis names -> ('data', 'fsdp', 'tensor') mesh.

Every parameter carries a tuple of logical axis names in its `out_sharding` metadata and
the model constrains its main activations with `constrain`. One rules table maps logical
names to mesh axes. A mesh axis is dropped for a dimension it does not divide (e.g. 9
heads over tensor=2), so odd shapes replicate instead of failing to compile.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Parameter names: vocab, embed, mlp, heads, kv_heads, head_dim, layers, norm.
# Activation names: batch, length, act_embed, act_mlp, act_heads, act_kv_heads, act_vocab.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_vocab", "tensor"),
)

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]] | Mapping


def _rules_dict(rules: Rules | None) -> dict:
    if rules is None:
        rules = DEFAULT_RULES
    table = dict(rules.items()) if isinstance(rules, Mapping) else {k: v for k, v in rules}
    for name, target in table.items():   # a misspelt mesh axis would fail later as a bare KeyError
        for m in (() if target is None else (target,) if isinstance(target, str) else tuple(target)):
            if m not in MESH_AXES:
                raise ValueError(f"sharding rule ({name!r}, {target!r}): {m!r} is not a mesh axis {MESH_AXES}")
    return table


def make_mesh(shape: Mapping[str, int] | Sequence[int] | None = None,
              devices: Sequence | None = None) -> Mesh:
    """Build a ('data','fsdp','tensor') mesh; one entry may be -1 to take the rest."""
    devices = list(devices if devices is not None else jax.devices())
    if shape is None:
        shape = {"data": 1, "fsdp": -1, "tensor": 1}
    if isinstance(shape, Mapping):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; use {MESH_AXES}")
        dims = [int(shape.get(a, 1)) for a in MESH_AXES]
    else:
        dims = [int(x) for x in shape]
        if len(dims) != len(MESH_AXES):
            raise ValueError(f"mesh shape {dims} must have {len(MESH_AXES)} entries {MESH_AXES}")
    n = len(devices)
    if any(d == 0 or d < -1 for d in dims):
        raise ValueError(f"mesh shape {dict(zip(MESH_AXES, dims))}: sizes must be >= 1, or -1 for the rest")
    if dims.count(-1) > 1:
        raise ValueError(f"mesh shape {dims}: at most one axis may be -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if n % known:
            raise ValueError(f"mesh shape {dims} does not divide {n} devices")
        dims[dims.index(-1)] = n // known
    if int(np.prod(dims)) != n:
        raise ValueError(f"mesh shape {dict(zip(MESH_AXES, dims))} needs {int(np.prod(dims))} "
                         f"devices but {n} are available")
    try:  # topology-aware device order on TPU/GPU; plain reshape elsewhere
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(dims, devices=devices)
    except Exception:  # noqa: BLE001 - CPU/virtual devices or odd topologies
        grid = np.asarray(devices).reshape(dims)
    return Mesh(grid, MESH_AXES)


def logical_to_spec(axes: Sequence[str | None] | None, shape: Sequence[int] | None,
                    mesh, rules: Rules | None = None) -> P:
    """PartitionSpec for a value with logical `axes`; drops mesh axes that don't divide."""
    if not axes:
        return P()
    table = _rules_dict(rules)
    used: set[str] = set()
    out = []
    for i, name in enumerate(axes):
        target = table.get(name) if name is not None else None
        if target is None:
            out.append(None)
            continue
        names = (target,) if isinstance(target, str) else tuple(target)
        keep = []
        size = 1
        for m in names:
            msize = mesh.shape[m]
            if m in used or msize == 1:
                continue
            if shape is not None and shape[i] % (size * msize):
                continue
            keep.append(m)
            size *= msize
        used.update(keep)
        out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    return P(*out)


def constrain(x: jax.Array, axes: Sequence[str | None], rules: Rules | None = None) -> jax.Array:
    """Sharding constraint on an activation by logical names; a no-op outside a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, x.shape, mesh, rules))


def batch_shards(rows: int, rules: Rules | None = None) -> int:
    """Into how many shards the current mesh splits a batch of `rows` (1 outside a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return 1
    spec = logical_to_spec(("batch",), (rows,), mesh, rules)[0]
    names = () if spec is None else (spec,) if isinstance(spec, str) else spec
    return int(np.prod([mesh.shape[a] for a in names]))


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules | None = None):
    """NamedSharding tree for an nnx.State (or abstract state) from its logical metadata."""
    def one(v):
        if isinstance(v, nnx.Variable):
            axes = v.get_metadata().get("out_sharding")
            value = v.get_value() if hasattr(v, "get_value") else v.value
            return v.replace(NamedSharding(mesh, logical_to_spec(axes, value.shape, mesh, rules)))
        return NamedSharding(mesh, P())
    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_module(module: nnx.Module, mesh: Mesh, rules: Rules | None = None) -> nnx.Module:
    """Place a module's variables on `mesh` according to their logical axes (in place)."""
    state = nnx.state(module)
    shardings = state_shardings(state, mesh, rules)
    nnx.update(module, jax.device_put(state, shardings))
    return module
