"""Precomputed reference log-probs for DPO/IPO/RPO (`train.reference="precomputed"`).

One pass of the frozen starting model over this host's preference pairs writes the
summed completion log-probs of every pair, keyed by a hash of its chosen and rejected
tokens; training then looks them up per batch and skips the reference forward.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from findap_jax.data.pipeline import make_iterator
from findap_jax.files import read_json, write_text_atomic
from findap_jax.train.shared_prompt import share_if_worth_it, shared_length
from findap_jax.train.step import batch_sharding, pair_logps


def pair_key(batch: dict, i: int) -> str:
    h = hashlib.sha1()
    for side in ("chosen", "rejected"):
        seg = batch[f"{side}_segment_ids"][i] > 0
        h.update(np.ascontiguousarray(batch[f"{side}_input_tokens"][i][seg]).tobytes())
        h.update(b"|")
    return h.hexdigest()


def compute_table(model, data_cfg, shard: tuple[int, int], shared_multiple: int = 0,
                  mesh=None) -> dict[str, list[float]]:
    """{pair key: [chosen, rejected] summed log-probs} over this host's pairs; with
    `shared_multiple` > 0 and one process, pairs run as prompt-shared rows of a multiple of
    that length. With several processes the model's parameters span every host, so each
    batch is a global array of all hosts' rows (`mesh`'s batch sharding), and the hosts run
    the same number of batches (one with fewer pads with empty ones); each keeps its own
    rows' results. Rows then stay separate (no per-batch agreement on a shared length)."""
    multi = jax.process_count() > 1
    shared_multiple = 0 if multi else shared_multiple

    @nnx.jit
    def logps(m, b):
        c, r = pair_logps(m, b)
        c, r = jnp.sum(c, -1), jnp.sum(r, -1)
        if multi:
            c, r = (jax.lax.with_sharding_constraint(x, batch_sharding(mesh)) for x in (c, r))
        return c, r

    it = make_iterator(data_cfg, "train", num_epochs=1, shuffle=False, shard=shard, drop_remainder=False)
    batches = list(it)
    if multi:
        from jax.experimental import multihost_utils

        from findap_jax.train.trainer import pad_rows
        rows = data_cfg.batch_size // jax.process_count()
        n = int(np.max(multihost_utils.process_allgather(np.int32(len(batches)))))
        empty = {k: np.zeros((rows,) + tuple(data_cfg.seq_len if d is None else d for d in s.shape[1:]),
                             s.dtype.as_numpy_dtype) for k, s in it.element_spec().items()}
        spec = batch_sharding(mesh)
    table: dict[str, list[float]] = {}
    for j in range(len(batches) if not multi else n):
        batch = batches[j] if j < len(batches) else None
        if multi:
            local = pad_rows(batch, rows) if batch is not None else empty
            c, r = logps(model, {k: jax.make_array_from_process_local_data(spec, np.asarray(v))
                                 for k, v in local.items()})
            c, r = (np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec.spec))
                    for x in (c, r))
        else:
            rows_in = share_if_worth_it(batch, shared_length(batch, shared_multiple)) if shared_multiple else batch
            c, r = jax.device_get(logps(model, jax.tree.map(jnp.asarray, rows_in)))
        for i in range(0 if batch is None else len(batch["chosen_input_tokens"])):
            table[pair_key(batch, i)] = [float(c[i]), float(r[i])]
    return table


def load_or_compute(path: Path, model, data_cfg, shard: tuple[int, int], shared_multiple: int = 0,
                    fingerprint: str = "", log=print, mesh=None) -> dict[str, list[float]]:
    """The table saved at `path` when it was computed for the same `fingerprint` (the
    reference model's files and dtype, the sequence length, the host split), else a new one.
    Pair keys hash the pair's tokens only, so a table of another start model would otherwise
    be read as this one's."""
    if path.exists():
        saved = read_json(path)
        if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint and isinstance(saved.get("table"), dict):
            return saved["table"]
        log(f"{path}: computed for another reference model or setting; computing it again")
    table = compute_table(model, data_cfg, shard, shared_multiple, mesh=mesh)
    write_text_atomic(path, json.dumps({"fingerprint": fingerprint, "table": table}))
    return table


def attach(batch: dict, table: dict[str, list[float]]) -> dict:
    """Add ref_chosen_logps / ref_rejected_logps [B] to a preference batch."""
    vals = []
    for i in range(len(batch["chosen_input_tokens"])):
        key = pair_key(batch, i)
        if key not in table:
            raise KeyError(f"no precomputed reference log-probs for pair {key[:12]} (data changed since "
                           "the reference pass? delete the reference file to recompute)")
        vals.append(table[key])
    arr = np.asarray(vals, np.float32)
    return dict(batch, ref_chosen_logps=arr[:, 0], ref_rejected_logps=arr[:, 1])
