"""Llama architecture config, presets, and conversion to/from HF `config.json`.

Preset shapes are the public Hugging Face configs of each model (config.json of
HuggingFaceTB/SmolLM2-135M-Instruct, meta-llama/Meta-Llama-3-8B, Llama-3.1-8B,
Llama-3.2-1B, Meta-Llama-3-70B).
"""
from __future__ import annotations

import dataclasses
from typing import Any

_LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=8192)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # None -> hidden_size // num_heads
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # None, or {"rope_type": "llama3", ...}
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 8192
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self):
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                                 f"num_heads {self.num_heads}; set head_dim explicitly")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} must be a multiple of "
                             f"num_kv_heads {self.num_kv_heads}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("llama3", "default"):
                raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: llama3)")

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        e = self.eos_token_id
        if e is None:
            return ()
        return tuple(e) if isinstance(e, (list, tuple)) else (int(e),)

    def replace(self, **kw) -> "LlamaConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self, include_embedding: bool = True) -> int:
        e, f, d = self.hidden_size, self.intermediate_size, self.head_dim
        attn = e * d * (2 * self.num_heads + 2 * self.num_kv_heads)
        per_layer = attn + 3 * e * f + 2 * e
        n = self.num_layers * per_layer + e
        if include_embedding:
            n += self.vocab_size * e * (1 if self.tie_word_embeddings else 2)
        elif not self.tie_word_embeddings:
            n += self.vocab_size * e  # the LM head is a matmul, counted as compute
        return n

    # --- Hugging Face config.json ---------------------------------------------------
    def to_hf(self) -> dict[str, Any]:
        d = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }
        return d

    @classmethod
    def from_hf(cls, d: dict[str, Any], source: str = "config.json") -> "LlamaConfig":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got a {type(d).__name__}")
        mt = d.get("model_type", "llama")
        if mt not in ("llama", "mistral"):
            raise ValueError(f"{source}: model_type {mt!r} is not a Llama-architecture model")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: hidden_act {d['hidden_act']!r} unsupported (need silu)")
        for flag in ("attention_bias", "mlp_bias"):
            if d.get(flag):
                raise ValueError(f"{source}: {flag}=true is not supported")
        window = d.get("sliding_window")   # Mistral-7B-v0.1: 4096 of 32768 positions
        if window is not None and d.get("use_sliding_window", True) and window < d.get("max_position_embeddings", 0):
            raise ValueError(f"{source}: sliding_window={window} (attention over the last {window} "
                             "positions only) is not supported; its logits would differ past the window")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{source}: missing required field(s) {missing}")
        rope_scaling = d.get("rope_scaling")
        rope_theta = d.get("rope_theta", 10000.0)
        if rope_scaling is None and isinstance(d.get("rope_parameters"), dict):
            rp = d["rope_parameters"]  # transformers>=5 spelling
            rope_theta = rp.get("rope_theta", rope_theta)
            if rp.get("rope_type", "default") != "default":
                rope_scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
        if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type")) == "default":
            rope_scaling = None
        try:
            return cls._checked_from_hf(d, rope_theta, rope_scaling)
        except (ValueError, TypeError) as e:   # __post_init__'s checks, or a wrongly typed field
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def _checked_from_hf(cls, d: dict[str, Any], rope_theta, rope_scaling) -> "LlamaConfig":
        return cls(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
            num_heads=d["num_attention_heads"],
            num_kv_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            head_dim=d.get("head_dim"), rope_theta=float(rope_theta),
            rope_scaling=dict(rope_scaling) if rope_scaling else None,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "LlamaConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"{source}: unknown LlamaConfig field(s) {unknown}")
        return cls(**d)


PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, rope_theta=10000.0,
                        tie_word_embeddings=True, max_position_embeddings=512,
                        bos_token_id=1, eos_token_id=2),
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                num_layers=30, num_heads=9, num_kv_heads=3, rope_theta=100000.0,
                                rms_norm_eps=1e-5, tie_word_embeddings=True,
                                max_position_embeddings=8192, bos_token_id=1, eos_token_id=2),
    "llama3-8b": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                             num_layers=32, num_heads=32, num_kv_heads=8, rope_theta=500000.0,
                             rms_norm_eps=1e-5, max_position_embeddings=8192,
                             bos_token_id=128000, eos_token_id=[128001, 128009]),
    "llama3.1-8b": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                               num_layers=32, num_heads=32, num_kv_heads=8, rope_theta=500000.0,
                               rope_scaling=dict(_LLAMA3_ROPE), rms_norm_eps=1e-5,
                               max_position_embeddings=131072, bos_token_id=128000,
                               eos_token_id=[128001, 128008, 128009]),
    "llama3.2-1b": LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                               num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
                               rope_theta=500000.0, rope_scaling=dict(_LLAMA3_ROPE, factor=32.0),
                               rms_norm_eps=1e-5, tie_word_embeddings=True,
                               max_position_embeddings=131072, bos_token_id=128000,
                               eos_token_id=[128001, 128008, 128009]),
    "llama3-70b": LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672,
                              num_layers=80, num_heads=64, num_kv_heads=8, rope_theta=500000.0,
                              rms_norm_eps=1e-5, max_position_embeddings=8192,
                              bos_token_id=128000, eos_token_id=[128001, 128009]),
}


def get_preset(name: str) -> LlamaConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
