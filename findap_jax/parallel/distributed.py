"""Multi-host start-up through `jax.distributed` (TPU pods: automatic; elsewhere the
coordinator address, process count and id come from the config or the environment:
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)."""
from __future__ import annotations

import os

import jax


def maybe_initialize(run_cfg) -> bool:
    """Initialise jax.distributed when configured; returns whether it did."""
    addr = run_cfg.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    nproc = run_cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    pid = run_cfg.process_id if run_cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
    if addr:
        if nproc <= 0 or pid < 0:
            raise ValueError("multi-host: coordinator is set but num_processes/process_id are not")
        if jax.config.jax_platforms in (None, "", "cpu") and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
            # CPU processes need a collectives backend to talk to each other (loopback tests).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=addr, num_processes=nproc, process_id=pid)
        return True
    if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID"):
        jax.distributed.initialize()  # TPU pod slice: everything comes from the metadata server
        return True
    return False
