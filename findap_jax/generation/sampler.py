"""Batched generation with a KV cache: greedy, temperature, top-k and top-p sampling.

Prompts are left-padded so every row writes the cache at the same slot; padding is
masked out of attention and positions count real tokens only, so a prompt's output does
not depend on what it was batched with. Prefill and each decode step are jitted once per
(batch, prompt bucket, cache length) shape.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from findap_jax.model import KVCache


def bucket(n: int, step: int = 32) -> int:
    """n rounded up to a multiple of step (at least step): few distinct jitted shapes."""
    return max(step, -(-n // step) * step)


def sample_logits(logits, key, temperature: float, top_k: int, top_p: float):
    """Next tokens [B] from logits [B, V]; temperature 0 is greedy."""
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
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=16)
def _compiled(graphdef, temperature: float, top_k: int, top_p: float):
    def prefill(state, ids, positions, segs, cache, key):
        model = nnx.merge(graphdef, state)
        logits, cache = model(ids, positions=positions, segment_ids=segs, cache=cache)
        return sample_logits(logits[:, -1], key, temperature, top_k, top_p), cache

    def step(state, tok, positions, cache, key):
        model = nnx.merge(graphdef, state)
        segs = jnp.ones_like(tok)
        logits, cache = model(tok[:, None], positions=positions[:, None], segment_ids=segs[:, None],
                              cache=cache)
        return sample_logits(logits[:, -1], key, temperature, top_k, top_p), cache

    return jax.jit(prefill, donate_argnums=(4,)), jax.jit(step, donate_argnums=(3,))


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
                 seed: int = 0, should_stop=None) -> list[list[int]]:
    """Generate for one batch; returns new tokens per row, cut after the first EOS.
    `should_stop(row, tokens)` lets the caller end a row early (stop strings)."""
    b = len(prompt_ids)
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt: every prompt needs at least one token")
    longest = max(len(p) for p in prompt_ids)
    if longest + max_new_tokens > model.cfg.max_position_embeddings:   # positions count real tokens
        raise ValueError(f"prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"max_position_embeddings {model.cfg.max_position_embeddings}")
    plen = bucket(longest)
    cache_len = bucket(plen + max_new_tokens)
    ids = np.full((b, plen), pad_id, np.int32)
    segs = np.zeros((b, plen), np.int32)
    for i, p in enumerate(prompt_ids):
        ids[i, plen - len(p):] = p
        segs[i, plen - len(p):] = 1
    positions = np.maximum(np.cumsum(segs, axis=1) - 1, 0).astype(np.int32)
    next_pos = segs.sum(axis=1).astype(np.int32)

    graphdef, state = nnx.split(model)
    prefill, step = _compiled(graphdef, float(temperature), int(top_k), float(top_p))
    dtype = jnp.dtype(model.dtype)
    cache = KVCache.init(model.cfg, b, cache_len, dtype)
    key = jax.random.PRNGKey(seed)
    tok, cache = prefill(state, jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(segs), cache,
                         jax.random.fold_in(key, 0))
    eos = set(int(e) for e in eos_ids)
    out: list[list[int]] = [[] for _ in range(b)]
    done = np.zeros(b, bool)
    for t in range(max_new_tokens):
        host = np.asarray(tok)
        for i in range(b):
            if done[i]:
                continue
            if int(host[i]) in eos:
                done[i] = True
            else:
                out[i].append(int(host[i]))
                if should_stop is not None and should_stop(i, out[i]):
                    done[i] = True
        if done.all() or t == max_new_tokens - 1:
            break
        tok, cache = step(state, tok, jnp.asarray(next_pos + t), cache, jax.random.fold_in(key, t + 1))
    return out


def generate(model, tokenizer, prompts, *, max_new_tokens: int = 128, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop: Sequence[str] | None = None,
             chat: bool = False, system: str | None = None, batch_size: int = 16) -> list[str]:
    """Generate one completion per prompt. A prompt is a string (wrapped as one user turn
    when `chat=True`) or a list of chat messages. Output stops at EOS or a stop string
    (which is not included)."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list (of strings or of message lists), not one string")
    return generate_from_ids(model, tokenizer, encode_prompts(tokenizer, prompts, chat, system),
                             max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed, stop=stop, batch_size=batch_size)


def generate_from_ids(model, tokenizer, encoded: Sequence[Sequence[int]], *, max_new_tokens: int = 128,
                      temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                      stop: Sequence[str] | None = None, batch_size: int = 16) -> list[str]:
    """`generate` for prompts already tokenised (e.g. truncated by the caller)."""
    stop = [s for s in (stop or []) if s]
    results: list[str] = []

    def cut(text: str) -> tuple[str, bool]:
        hits = [text.find(s) for s in stop if s in text]
        return (text[:min(hits)], True) if hits else (text, False)

    def should_stop(_row, toks):
        return bool(stop) and len(toks) % 4 == 0 and cut(tokenizer.decode(toks))[1]

    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        new = generate_ids(model, chunk, eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, seed=seed + start, should_stop=should_stop)
        results += [cut(tokenizer.decode(toks))[0] for toks in new]
    return results
