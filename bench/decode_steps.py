"""Decode step time at long KV caches, the cost of long-context generation evals.

    python bench/decode_steps.py [--rows 16] [--slots 1024] [--own 128] [--starts 0,4,8] [--repeats 3]

SmolLM2-135M shapes with random weights and random cache contents (the cost does not
depend on the values), fp32, the decode steps `generate_ids` runs (one jitted chunk of 16
steps, per-layer weights on CPU). For each entry of --starts: 0 is a plain cache of
--slots + --own slots per row (a shared start copied to every row); g > 0 is g shared
starts of --slots tokens read in place (`KVCache.with_prefix`, rows spread evenly over
them) plus --own slots per row. Prints milliseconds per decode step (median chunk / 16).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from timing import median_time  # bench/timing.py

from findap_jax.generation import sampler
from findap_jax.host_malloc import reexec_with_host_malloc
from findap_jax.model import KVCache, Llama, get_preset

CHUNK = 16


def random_cache(cfg, rows: int, slots: int, filled: int, rng) -> KVCache:
    """A per-layer cache whose first `filled` slots hold random keys and values."""
    c = KVCache.init(cfg, rows, slots, per_layer=True)
    fill = [jnp.asarray(rng.standard_normal(x.shape), jnp.float32) for x in c.k + c.v]
    n = cfg.num_layers
    return c.replace(k=tuple(fill[:n]), v=tuple(fill[n:]), index=jnp.int32(filled),
                     valid=jnp.zeros((rows, slots), bool).at[:, :filled].set(True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--slots", type=int, default=1024)
    ap.add_argument("--own", type=int, default=128, help="each row's own slots (half filled)")
    ap.add_argument("--starts", default="0,4,8")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    reexec_with_host_malloc()   # jemalloc or 2 MB pages for XLA's per-step temporaries (findap_jax/host_malloc.py)
    cfg = get_preset("smollm2-135m")
    model = Llama(cfg, rngs=nnx.Rngs(0))
    layers = sampler.unrolled_layers(model)
    graphdef, state = nnx.split(model)
    decode = sampler._compiled(graphdef, 0.0, 0, 1.0)[1]
    rng = np.random.default_rng(0)
    b, half = args.rows, args.own // 2
    tok, key = jnp.ones((b,), jnp.int32), jax.random.PRNGKey(0)
    print(f"device: {jax.devices()[0].device_kind}, {b} rows, starts of {args.slots} tokens, "
          f"{args.own} own slots, fp32")
    for g in [int(x) for x in args.starts.split(",")]:
        if g == 0:
            cache = random_cache(cfg, b, args.slots + args.own, args.slots + half, rng)
            what = f"copied to every row ({args.slots + args.own} slots per row)"
        else:
            starts = random_cache(cfg, g, args.slots, args.slots, rng)
            cache = random_cache(cfg, b, args.own, half, rng).with_prefix(starts, np.arange(b) % g)
            what = f"{g} starts read in place"
        pos = jnp.full((b,), args.slots + half, jnp.int32)
        box = [cache]

        def chunk():
            toks, box[0] = decode(state, layers, tok, pos, box[0], key, jnp.int32(0), CHUNK)
            toks.block_until_ready()
        print(f"  {what:44} {median_time(chunk, args.repeats) / CHUNK * 1e3:7.1f} ms per decode step")


if __name__ == "__main__":
    main()
