"""Device mesh, logical-axis sharding rules and multi-host setup."""
from findap_jax.parallel.sharding import (DEFAULT_RULES, MESH_AXES, constrain, logical_to_spec,
                                          make_mesh, shard_module, state_shardings)

__all__ = ["DEFAULT_RULES", "MESH_AXES", "constrain", "logical_to_spec", "make_mesh",
           "shard_module", "state_shardings"]
