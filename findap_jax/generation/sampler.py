"""Batched generation with a KV cache: greedy, temperature, top-k and top-p sampling.

Prompts are left-padded so every row writes the cache at the same slot; padding is
masked out of attention and positions count real tokens only, so a prompt's output does
not depend on what it was batched with (when sampling, give each row its own key stream
with `seeds`). Prefill and a chunk of decode steps (a device
loop: no host round trip per token) are jitted once per (batch, prompt bucket, cache
length) shape. On CPU the layers run unrolled over per-layer weight copies (see
`Llama.unstack_layers`): decoding there is bound by reading the weights.
"""
from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from findap_jax.generation.prefixes import prefix_groups, shared_order
from findap_jax.model import KVCache


def bucket(n: int, step: int = 32) -> int:
    """n rounded up to a multiple of step (at least step): few distinct jitted shapes."""
    return max(step, -(-n // step) * step)


def length_bucket(n: int) -> int:
    """n rounded up to a multiple of max(32, 2^floor(log2 n) / 8): under 1/8 padding, and
    at most 8 compiled prompt/cache lengths per doubling (each costs seconds to compile)."""
    return bucket(n, max(32, (1 << (max(n, 1).bit_length() - 1)) // 8))


def step_key(key, i):
    """`key` folded with step i: one key [2], or per-row keys [B, 2] each folded."""
    if key.ndim == 2:
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, i)
    return jax.random.fold_in(key, i)


def rows_independent(temperature: float, seeds) -> bool:
    """Whether a row's tokens do not depend on the rest of its batch (greedy, or a key per
    row), so rows may be reordered or leave the batch; one batch-wide sampling stream
    draws by batch shape."""
    return temperature <= 0.0 or seeds is not None


def sample_logits(logits, key, temperature: float, top_k: int, top_p: float):
    """Next tokens [B] from logits [B, V]; temperature 0 is greedy. `key` is one key [2] or
    one per row [B, 2] (a row's draw then depends on its own key only)."""
    if temperature <= 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        drop_sorted = (cum - jax.nn.softmax(sorted_logits, axis=-1)) >= top_p  # keep first over p
        drop_sorted = drop_sorted.at[:, 0].set(False)   # the likeliest token always stays
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    if key.ndim == 2:
        return jax.vmap(jax.random.categorical)(key, logits).astype(jnp.int32)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


DECODE_CHUNK = 16  # decode steps per device loop between host checks for EOS / stop strings


def decode_compiler_options(rows: int) -> dict | None:
    """XLA options for decode steps of `rows` batch rows. On CPU a single row runs faster
    on XLA's own dot emitter (matrix-vector products at memory speed) than on YNNPACK, and
    two or more rows the other way round: that emitter takes 3-14x one row's time for 2-8
    rows against the tied LM head, YNNPACK 1.6-2.1x (session 10: batch-1 decode 10% faster
    on the emitter, batch 8 17% faster on YNNPACK; `python bench/decode.py --decode-dots`)."""
    if jax.default_backend() == "cpu" and rows == 1:
        return {"xla_cpu_experimental_ynn_fusion_type": ""}
    return None


@functools.lru_cache(maxsize=16)
def _compiled(graphdef, temperature: float, top_k: int, top_p: float):
    def prefill(state, layers, ids, positions, segs, cache, key):
        model = nnx.merge(graphdef, state)
        h, cache = model.hidden_states(ids, positions, segs, cache, layers, prefill=True)
        return sample_logits(model.head(h[:, -1]), key, temperature, top_k, top_p), cache

    def decode(state, layers, tok, positions, cache, key, start, n):
        """n decode steps from token `tok` at `positions`; returns [B, n] tokens."""
        model = nnx.merge(graphdef, state)

        def one(carry, t):
            tok, cache = carry
            pos = (positions + t)[:, None]
            h, cache = model.hidden_states(tok[:, None], pos, jnp.ones_like(pos), cache, layers)
            nxt = sample_logits(model.head(h[:, -1]), step_key(key, start + t + 1),
                                temperature, top_k, top_p)
            return (nxt, cache), nxt

        (_, cache), toks = jax.lax.scan(one, (tok, cache), jnp.arange(n, dtype=jnp.int32))
        return toks.T, cache

    def extend(state, layers, ids, positions, segs, cache, key):
        """Prompt tokens after what the cache holds (a copied shared prefix)."""
        model = nnx.merge(graphdef, state)
        h, cache = model.hidden_states(ids, positions, segs, cache, layers)
        return sample_logits(model.head(h[:, -1]), key, temperature, top_k, top_p), cache

    decoders: dict = {}   # one jit per set of compiler options (they depend on the batch width)

    def decode_rows(state, layers, tok, *rest):
        opts = decode_compiler_options(tok.shape[0])
        name = tuple(sorted(opts.items())) if opts else ()
        if name not in decoders:
            decoders[name] = jax.jit(decode, donate_argnums=(4,), static_argnums=(7,), compiler_options=opts)
        return decoders[name](state, layers, tok, *rest)

    return jax.jit(prefill, donate_argnums=(5,)), decode_rows, jax.jit(extend, donate_argnums=(5,))


_UNSTACKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def unrolled_layers(model):
    """Per-layer weights for decoding where that is faster (CPU), else None (scan).
    Kept per model while its stacked weights are the same arrays (a training step makes
    new ones), so repeated generate calls do not copy the weights again."""
    if jax.default_backend() != "cpu":
        return None
    leaves = jax.tree.leaves(nnx.state(model.layers))
    hit = _UNSTACKED.get(model)
    if hit is None or len(hit[0]) != len(leaves) or any(r() is not x for r, x in zip(hit[0], leaves)):
        hit = ([weakref.ref(x) for x in leaves], model.unstack_layers())
        _UNSTACKED[model] = hit
    return hit[1]


def encode_prompts(tokenizer, prompts, chat: bool, system: str | None) -> list[list[int]]:
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str) and not chat:
            out.append(tokenizer.encode(p, add_bos=tokenizer.add_bos))
            continue
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        if system is not None and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system}] + msgs
        out.append(tokenizer.encode_chat(msgs, add_generation_prompt=True, source=f"prompts[{i}]")[0])
    return out


def fit_prompts(model, encoded: Sequence[Sequence[int]], max_new_tokens: int) -> tuple[list[list[int]], int]:
    """Left-truncate prompts so prompt + new tokens fit the model's context (the end of a
    prompt holds the question and the answer cue); returns them and how many were cut."""
    room = model.cfg.max_position_embeddings - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt "
                         f"(max_position_embeddings {model.cfg.max_position_embeddings})")
    return [list(e[-room:]) for e in encoded], sum(len(e) > room for e in encoded)


def generate_ids(model, prompt_ids: Sequence[Sequence[int]], *, eos_ids: Sequence[int], pad_id: int,
                 max_new_tokens: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0, seeds: Sequence[int] | None = None, should_stop=None,
                 layers="auto", compact: bool = True, share_prefixes: bool = True,
                 stats: dict | None = None) -> list[list[int]]:
    """Generate for one batch; returns new tokens per row, cut after the first EOS.
    `seeds`: one per row, each row sampling from its own key stream (its tokens then do not
    depend on the other rows); None: one stream from `seed` for the batch.
    `should_stop(row, tokens)` lets the caller end a row early (stop strings). `layers`:
    per-layer weights from `unrolled_layers` (pass them to reuse across batches), None to
    run the scanned stack, "auto" to pick by backend. `compact`: once half the rows are
    done, decode only the live ones (a smaller batch; same tokens), so one long answer
    does not keep the whole batch decoding. `share_prefixes`: prompts that start alike
    (`prefixes.prefix_groups`) have that start prefilled once when that prefills under
    3/4 of the tokens. `stats` (a dict) gets prefill_tokens / prompt_tokens added."""
    b = len(prompt_ids)
    if seeds is not None and len(seeds) != b:
        raise ValueError(f"seeds: {len(seeds)} given for {b} prompts")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt: every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: generate at least one token")
    if temperature > 0 and not 0.0 < top_p <= 1.0:   # top_p <= 0 would keep no token at all
        raise ValueError(f"top_p={top_p}: must be in (0, 1]")
    if top_k < 0:
        raise ValueError(f"top_k={top_k}: must be >= 0 (0 = off)")
    longest = max(len(p) for p in prompt_ids)
    if longest + max_new_tokens > model.cfg.max_position_embeddings:   # positions count real tokens
        raise ValueError(f"prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"max_position_embeddings {model.cfg.max_position_embeddings}")
    if isinstance(layers, str):
        layers = unrolled_layers(model)
    graphdef, state = nnx.split(model)
    prefill, decode, extend = _compiled(graphdef, float(temperature), int(top_k), float(top_p))
    if seeds is None:
        key = jax.random.PRNGKey(seed)
    else:
        key = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    new_cache = functools.partial(KVCache.init, model.cfg, dtype=jnp.dtype(model.dtype), per_layer=layers is not None)
    plen = length_bucket(longest)
    shared = None   # sharing is worth it when it prefills under 3/4 of the tokens (padding counted)
    if share_prefixes:
        shared = _fill_shared(prefill, extend, state, layers, new_cache, prompt_ids, pad_id,
                              max_new_tokens, step_key(key, 0), budget=0.75 * b * plen)
    if shared is not None:
        tok, cache, filled = shared
    else:
        ids, positions, segs = _left_padded(prompt_ids, plen, pad_id)
        cache = new_cache(b, length_bucket(plen + max_new_tokens))
        tok, cache = prefill(state, layers, ids, positions, segs, cache, step_key(key, 0))
        filled = b * plen
    if stats is not None:
        stats["prefill_tokens"] = stats.get("prefill_tokens", 0) + filled
        stats["prompt_tokens"] = stats.get("prompt_tokens", 0) + sum(len(p) for p in prompt_ids)
    next_pos = np.array([len(p) for p in prompt_ids], np.int32)   # positions count real tokens
    eos = set(int(e) for e in eos_ids)
    out: list[list[int]] = [[] for _ in range(b)]
    done = np.zeros(b, bool)

    def take(slots, host_tokens) -> bool:
        for j, i in enumerate(slots):
            if done[i]:
                continue
            if int(host_tokens[j]) in eos:
                done[i] = True
            else:
                out[i].append(int(host_tokens[j]))
                if should_stop is not None and should_stop(i, out[i]):
                    done[i] = True
        return bool(done.all())

    produced = 1
    finished = take(range(b), np.asarray(tok))
    slots = np.arange(b)   # slots[j]: the prompt row decoded in batch slot j
    compactable = compact and rows_independent(temperature, seeds)
    while not finished and produced < max_new_tokens:
        if compactable:
            live = np.flatnonzero(~done[slots])
            if len(live) <= len(slots) // 2:   # halve (or more) the batch: powers of two
                width = 1 << (len(live) - 1).bit_length()
                keep = np.concatenate([live, np.flatnonzero(done[slots])[:width - len(live)]])
                tok, cache, key = _keep_rows(tok, cache, key, jnp.asarray(keep, jnp.int32))
                slots, next_pos = slots[keep], next_pos[keep]
        left = max_new_tokens - produced   # a power of two bounds the compiled variants
        n = min(DECODE_CHUNK, 1 << (left - 1).bit_length())
        toks, cache = decode(state, layers, tok, jnp.asarray(next_pos + produced - 1), cache, key,
                             jnp.int32(produced - 1), n)
        host = np.asarray(toks)
        for j in range(min(n, left)):
            if take(slots, host[:, j]):
                finished = True
                break
        produced += min(n, left)
        tok = toks[:, -1]
    return out


def _left_padded(rows: Sequence[Sequence[int]], width: int, pad_id: int, start=None):
    """ids, positions and segment ids (0 = padding), each [len(rows), width], rows
    right-aligned; positions count real tokens from `start` (per row, default 0)."""
    ids = np.full((len(rows), width), pad_id, np.int32)
    segs = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = r
            segs[i, width - len(r):] = 1
    positions = np.maximum(np.cumsum(segs, axis=1) - 1, 0)
    if start is not None:
        positions = positions + np.asarray(start)[:, None]
    return jnp.asarray(ids), jnp.asarray(positions.astype(np.int32)), jnp.asarray(segs)


# A decode step reads a shared prefix with every row's queries against all g starts (dense
# matmuls), a copied one row by row (small batched matmuls, slower per slot): 16 rows
# decoding after 1,024-token starts on CPU (random SmolLM2-135M weights) took 227 ms per
# step reading 4 starts in place and 329 ms reading 8, vs 386 ms with the starts copied.
ROWS_PER_SHARED_START = 2


def _fill_shared(prefill, extend, state, layers, new_cache, prompt_ids, pad_id, max_new_tokens, key, budget):
    """Prefill each group's shared start once (rows padded to a power of two), then run
    every prompt's rest through `extend`. With `ROWS_PER_SHARED_START` rows per start or
    more, the prompts' cache [rest block | new tokens] reads the starts as a shared prefix
    (`KVCache.with_prefix`: stored once); with fewer, each start's cache rows are copied
    to its prompts ([start block | rest block | new tokens]). Blocks are left-padded.
    Returns (first tokens, cache, tokens prefilled), or None (nothing run) when that
    would prefill `budget` tokens or more."""
    b, groups = len(prompt_ids), prefix_groups(prompt_ids)
    if len(groups) == b:
        return None
    group_of, shared = np.zeros(b, np.int32), np.zeros(b, np.int32)
    for j, (n, rows) in enumerate(groups):
        group_of[rows], shared[rows] = j, n
    g = 1 << (len(groups) - 1).bit_length()
    starts = [list(prompt_ids[rows[0]][:n]) for n, rows in groups] + [[]] * (g - len(groups))
    rests = [list(p[shared[i]:]) for i, p in enumerate(prompt_ids)]
    pb, tb = length_bucket(max(n for n, _ in groups)), length_bucket(max(len(r) for r in rests))
    if g * pb + b * tb >= budget:
        return None
    ids, positions, segs = _left_padded(starts, pb, pad_id)
    in_place = b >= ROWS_PER_SHARED_START * g
    slots = pb if in_place else length_bucket(pb + tb + max_new_tokens)
    _, cache = prefill(state, layers, ids, positions, segs, new_cache(g, slots), jax.random.PRNGKey(0))
    group_of = jnp.asarray(group_of)
    if in_place:
        cache = _with_prefix(new_cache(b, length_bucket(tb + max_new_tokens)), cache, group_of)
    else:
        cache = _take_rows(cache, group_of)
    ids, positions, segs = _left_padded(rests, tb, pad_id, start=shared)
    tok, cache = extend(state, layers, ids, positions, segs, cache, key)
    return tok, cache, g * pb + b * tb


_with_prefix = jax.jit(KVCache.with_prefix)


@jax.jit
def _take_rows(cache: KVCache, rows) -> KVCache:
    """The cache of batch rows `rows` (a row may be taken more than once); a shared prefix
    stays as it is, only which start each row reads is taken."""
    def take(x, axis):
        return jnp.take(x, rows, axis=axis)
    if isinstance(cache.k, tuple):
        k, v = tuple(take(x, 0) for x in cache.k), tuple(take(x, 0) for x in cache.v)
    else:
        k, v = take(cache.k, 1), take(cache.v, 1)
    group = None if cache.prefix_group is None else take(cache.prefix_group, 0)
    return cache.replace(k=k, v=v, valid=take(cache.valid, 0), prefix_group=group)


@jax.jit
def _keep_rows(tok, cache: KVCache, key, keep):
    """The batch slots `keep` of the last tokens, the cache and per-row keys (a batch-wide
    key [2] is kept as is)."""
    return jnp.take(tok, keep, axis=0), _take_rows(cache, keep), (jnp.take(key, keep, axis=0) if key.ndim == 2 else key)


def generate(model, tokenizer, prompts, *, max_new_tokens: int = 128, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, seeds: Sequence[int] | None = None,
             stop: Sequence[str] | None = None, chat: bool = False, system: str | None = None,
             batch_size: int = 16) -> list[str]:
    """Generate one completion per prompt. A prompt is a string (wrapped as one user turn
    when `chat=True`) or a list of chat messages. Output stops at EOS or a stop string
    (which is not included). `seeds`: one per prompt (see `generate_ids`)."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list (of strings or of message lists), not one string")
    return generate_from_ids(model, tokenizer, encode_prompts(tokenizer, prompts, chat, system),
                             max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed, seeds=seeds, stop=stop, batch_size=batch_size)


def generate_from_ids(model, tokenizer, encoded: Sequence[Sequence[int]], *, max_new_tokens: int = 128,
                      temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                      seeds: Sequence[int] | None = None, stop: Sequence[str] | None = None,
                      batch_size: int = 16, on_batch=None, share_prefixes: bool = True,
                      stats: dict | None = None) -> list[str]:
    """`generate` for prompts already tokenised (e.g. truncated by the caller); results in
    the order given. `on_batch(indices, texts)` is called after each batch (progress files).
    `share_prefixes`, `stats`: see `generate_ids`."""
    if seeds is not None and len(seeds) != len(encoded):
        raise ValueError(f"seeds: {len(seeds)} given for {len(encoded)} prompts")
    stop = [s for s in (stop or []) if s]

    def cut(text: str) -> tuple[str, bool]:
        hits = [text.find(s) for s in stop if s in text]
        return (text[:min(hits)], True) if hits else (text, False)

    def should_stop(_row, toks):
        return bool(stop) and len(toks) % 4 == 0 and cut(tokenizer.decode(toks))[1]

    # Rows whose tokens do not depend on their batch (greedy, or a seed per row) are batched
    # shortest prompt first (less left padding in the prefill and a shorter KV cache) and,
    # with `share_prefixes`, prompts that start alike next to each other. One batch-wide
    # sampling stream keeps the given order (its draws depend on the batch).
    n = len(encoded)
    order = list(range(n))
    if rows_independent(temperature, seeds):
        order = shared_order(encoded) if share_prefixes else sorted(order, key=lambda i: len(encoded[i]))
    layers = unrolled_layers(model) if encoded else None
    results: list[str | None] = [None] * n
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        new = generate_ids(model, [encoded[i] for i in rows], eos_ids=tokenizer.eos_ids,
                           pad_id=tokenizer.pad_id, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=seed + start, should_stop=should_stop,
                           layers=layers, seeds=None if seeds is None else [seeds[i] for i in rows],
                           share_prefixes=share_prefixes, stats=stats)
        for i, toks in zip(rows, new):
            results[i] = cut(tokenizer.decode(toks))[0]
        if on_batch is not None:
            on_batch(rows, [results[i] for i in rows])
    return results
