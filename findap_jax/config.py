"""Config files: `path.py[:arg]` defining `get_config(arg=None) -> ConfigDict`, plus dotted
overrides `--config.a.b=value` (big_vision / absl config_flags convention).

Overrides are parsed by the type of the field they replace; an unknown key is an error
that lists the closest existing keys. The defaults' builders return their configs locked
(`lock_schema`), so a config file's `cfg.data.update(seq_length=...)` typo fails too, and
the result is locked again after the overrides. Open maps (`OPEN_MAPS`: task specs, rates,
per-task files) take any key, and a dict given for one replaces it whole.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import ml_collections


def _flat_keys(cfg, prefix="") -> list[str]:
    out = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, ml_collections.ConfigDict):
            out += _flat_keys(v, key + ".")
    return out


# ConfigDict fields keyed by user names (task specs, mixture rates, per-task files)
OPEN_MAPS = ("tasks", "rates", "files")


def lock_schema(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Lock `cfg` (no new keys anywhere) except inside its open maps; returns it."""
    cfg.lock()

    def open_maps(node):
        for k, v in node.items():
            if isinstance(v, ml_collections.ConfigDict):
                v.unlock() if k in OPEN_MAPS else open_maps(v)
    open_maps(cfg)
    return cfg


def load_module_config(spec: str) -> ml_collections.ConfigDict:
    path, _, arg = spec.partition(":")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: config file not found")
    mod_spec = importlib.util.spec_from_file_location(f"findap_config_{p.stem}", p)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: defines no get_config()")
    cfg = module.get_config(arg) if arg else module.get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ValueError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return cfg


def parse_value(text: str, current):
    """Parse an override string into the type of the value it replaces."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        try:
            return int(text)
        except ValueError:
            pass
        try:
            v = float(text)   # "1e4", "512.0"
        except ValueError:
            v = None
        if v is None or not v.is_integer() or abs(v) >= 2 ** 53:
            raise ValueError(f"expected an integer, got {text!r}")
        return int(v)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if current is None or isinstance(current, (list, tuple, dict, ml_collections.ConfigDict)):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text if current is None else json.loads(text)
    return text


def apply_override(cfg: ml_collections.ConfigDict, key: str, text: str) -> None:
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if (i == len(parts) - 1 and i > 0 and parts[i - 1] in OPEN_MAPS
                and isinstance(node, ml_collections.ConfigDict) and part not in node):
            with node.unlocked():   # a new entry of an open map ("data.rates.my_task=0.5")
                node[part] = None
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            full = ".".join(parts[:i + 1])
            near = difflib.get_close_matches(full, _flat_keys(cfg), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise KeyError(f"unknown config key '{key}'{hint}")
        if i < len(parts) - 1:
            node = node[part]
    leaf = parts[-1]
    current = node[leaf]
    try:
        value = parse_value(text, current)
    except (ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"config key '{key}': {e}") from None
    try:
        with node.unlocked():
            if isinstance(current, ml_collections.ConfigDict) and leaf in OPEN_MAPS:
                if not isinstance(value, dict):
                    raise TypeError(f"expected a dict like {current.to_dict()}")
                node[leaf] = ml_collections.ConfigDict(value)   # replaced whole, not merged
            elif isinstance(current, ml_collections.ConfigDict):
                if not isinstance(value, dict):
                    raise TypeError(f"expected a dict like {current.to_dict()}")
                unknown = set(value) - set(current.keys())
                if unknown and current.keys():
                    raise TypeError(f"unknown key(s) {sorted(unknown)}; known {sorted(current.keys())}")
                node[leaf].update(value) if current.keys() else node.__setitem__(
                    leaf, ml_collections.ConfigDict(value))
            else:
                node[leaf] = value
    except TypeError as e:
        raise ValueError(f"config key '{key}': {e}") from None


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """`spec` is `file.py[:arg]`; overrides are `key=value` strings (dotted keys)."""
    cfg = load_module_config(spec)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        apply_override(cfg, key, value)
    cfg.lock()
    return cfg


def split_config_args(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """Pull `--config=...` and `--config.key=value` out of argv; return the rest."""
    spec, overrides, rest = None, [], []
    it = iter(argv)
    for a in it:
        if a == "--config":
            spec = next(it, None)
        elif a.startswith("--config="):
            spec = a.split("=", 1)[1]
        elif a.startswith("--config."):
            body = a[len("--config."):]
            if "=" not in body:
                body = f"{body}={next(it, '')}"
            overrides.append(body)
        else:
            rest.append(a)
    return spec, overrides, rest


def comma_list(spec) -> list[str]:
    """'a, b,,c' or ['a', 'b'] -> ['a', 'b', 'c']: list-valued config strings."""
    items = spec.split(",") if isinstance(spec, str) else (spec or [])
    return [s.strip() for s in items if s.strip()]


def to_json(cfg: ml_collections.ConfigDict) -> str:
    return cfg.to_json_best_effort(indent=2, sort_keys=True)
