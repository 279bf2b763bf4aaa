"""Tokenizers: HF `tokenizer.json`, SentencePiece `.model`, or built from GGUF metadata,
with the model's chat template and an assistant-only loss mask.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from findap_jax.data.chat import ChatFormat, Message
from findap_jax.files import read_json

# Llama-3 pre-tokenizer split pattern (public tokenizer.json of Meta-Llama-3).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class Tokenizer:
    """Text <-> ids for one model. `encode` never adds BOS unless asked; chat rendering
    adds whatever the template has."""

    def __init__(self, backend, *, bos_id: int | None, eos_ids: Sequence[int], pad_id: int | None = None,
                 chat: ChatFormat | None = None, chat_template: str | None = None,
                 kind: str = "hf", source: str = "", add_bos: bool = False):
        self.backend, self.kind, self.source = backend, kind, source
        self.add_bos = add_bos  # whether plain-text prompts start with BOS for this model
        self.bos_id = bos_id
        self.eos_ids = tuple(int(e) for e in eos_ids)
        if not self.eos_ids:
            raise ValueError(f"{source}: tokenizer has no EOS token")
        self.pad_id = pad_id if pad_id is not None else self.eos_ids[0]
        self.chat, self.chat_template = chat, chat_template
        if kind == "hf":
            specials = [t for t in backend.get_added_tokens_decoder().values() if t.special]
            self._special_ids = {backend.token_to_id(t.content) for t in specials}
        else:
            self._special_ids = {i for i in range(backend.get_piece_size())
                                 if backend.is_control(i) or backend.is_unknown(i)}

    # --- basic ---------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        return self.eos_ids[0]

    @property
    def vocab_size(self) -> int:
        if self.kind == "hf":
            return self.backend.get_vocab_size(with_added_tokens=True)
        return self.backend.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        if self.kind == "hf":
            return self.backend.token_to_id(token)
        i = self.backend.piece_to_id(token)
        return None if i == self.backend.unk_id() and token != self.backend.id_to_piece(i) else i

    def id_to_token(self, i: int) -> str:
        return self.backend.id_to_token(i) if self.kind == "hf" else self.backend.id_to_piece(i)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        if self.kind == "hf":
            ids = self.backend.encode(text, add_special_tokens=False).ids
        else:
            ids = self._sp_encode_with_specials(text)
        if add_bos:
            if self.bos_id is None:
                raise ValueError(f"{self.source}: tokenizer has no BOS token")
            ids = [self.bos_id] + ids
        return list(ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "hf":
            return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self.backend.decode(ids)

    def _sp_encode_with_specials(self, text: str) -> list[int]:
        """SentencePiece does not split on control symbols written in text; do it here."""
        specials = [self.backend.id_to_piece(i) for i in sorted(self._special_ids)
                    if not self.backend.is_unknown(i)]
        if not specials:
            return self.backend.encode(text)
        pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
        out: list[int] = []
        for part in re.split(pattern, text):
            if not part:
                continue
            out += [self.backend.piece_to_id(part)] if part in specials else self.backend.encode(part)
        return out

    # --- chat ----------------------------------------------------------------------
    def _need_chat(self) -> ChatFormat:
        if self.chat is None:
            raise ValueError(f"{self.source}: this tokenizer has no chat template; "
                             "pass chat_format='llama3'|'chatml'|'smollm' when loading")
        return self.chat

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self._need_chat().render(messages, add_generation_prompt)

    def encode_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False,
                    source: str = "messages", last_turn_only: bool = False) -> tuple[list[int], list[int]]:
        """Token ids of the rendered chat and a 0/1 mask of assistant content + end token
        (`last_turn_only`: of the final assistant turn only, as preference pairs train)."""
        segs = self._need_chat().segments(messages, add_generation_prompt, source=source)
        if last_turn_only:
            last = max((j for j, (_, train) in enumerate(segs) if train), default=-1)
            segs = [(t, j == last) for j, (t, _) in enumerate(segs)]
        if self.kind == "hf":
            text = "".join(t for t, _ in segs)
            enc = self.backend.encode(text, add_special_tokens=False)
            spans, pos = [], 0
            for t, train in segs:
                if train:
                    spans.append((pos, pos + len(t)))
                pos += len(t)
            starts = np.asarray([s for s, _ in enc.offsets])
            mask = np.zeros(len(enc.ids), np.int32)
            for a, b in spans:
                mask |= ((starts >= a) & (starts < b)).astype(np.int32)
            return list(enc.ids), mask.tolist()
        ids, mask = [], []
        for t, train in segs:
            piece = self.encode(t)
            ids += piece
            mask += [int(train)] * len(piece)
        return ids, mask

    # --- IO ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.kind == "hf":
            self.backend.save(str(d / "tokenizer.json"))
        else:
            (d / "tokenizer.model").write_bytes(self.backend.serialized_model_proto())
        conf = {"tokenizer_class": "PreTrainedTokenizerFast" if self.kind == "hf" else "LlamaTokenizer",
                "bos_token": self.id_to_token(self.bos_id) if self.bos_id is not None else None,
                "eos_token": self.id_to_token(self.eos_id),
                "pad_token": self.id_to_token(self.pad_id),
                "add_bos_token": self.add_bos, "clean_up_tokenization_spaces": False}
        if self.chat_template:
            conf["chat_template"] = self.chat_template
        if self.chat is not None:
            conf["findap_chat_format"] = {"name": self.chat.name, "default_system": self.chat.default_system}
        (d / "tokenizer_config.json").write_text(json.dumps(conf, indent=2))

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, chat_format: str | None = None) -> "Tokenizer":
        d = Path(directory)
        conf_path = d / "tokenizer_config.json"
        conf = read_json(conf_path) if conf_path.exists() else {}
        gen_path = d / "generation_config.json"
        gen = read_json(gen_path) if gen_path.exists() else {}
        mcfg_path = d / "config.json"
        mcfg = read_json(mcfg_path) if mcfg_path.exists() else {}
        if (d / "tokenizer.json").exists():
            from tokenizers import Tokenizer as HFTokenizer
            backend, kind = HFTokenizer.from_file(str(d / "tokenizer.json")), "hf"
            lookup = backend.token_to_id
        elif (d / "tokenizer.model").exists():
            import sentencepiece as spm
            backend, kind = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model")), "sp"
            lookup = backend.piece_to_id
        else:
            raise FileNotFoundError(f"{d}: no tokenizer.json or tokenizer.model")

        def tok_id(key):
            v = conf.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return lookup(v) if isinstance(v, str) else None

        bos = tok_id("bos_token")
        if bos is None:
            bos = mcfg.get("bos_token_id", backend.bos_id() if kind == "sp" else None)
        eos: list[int] = []
        for src in (gen.get("eos_token_id"), mcfg.get("eos_token_id"), tok_id("eos_token")):
            for e in (src if isinstance(src, list) else [src]):
                if e is not None and int(e) not in eos:
                    eos.append(int(e))
        if not eos and kind == "sp":
            eos = [backend.eos_id()]
        template = conf.get("chat_template")
        if isinstance(template, list):  # list of named templates
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        bos_text = backend.id_to_token(bos) if (kind == "hf" and bos is not None) else ""
        chat = _chat_format(chat_format, template, bos_text, conf.get("findap_chat_format"), str(conf_path))
        add_bos = conf.get("add_bos_token", kind == "sp" or (chat is not None and chat.name == "llama3"))
        return cls(backend, bos_id=bos, eos_ids=eos, pad_id=tok_id("pad_token"), chat=chat,
                   chat_template=template, kind=kind, source=str(d),
                   add_bos=bool(add_bos) and bos is not None)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, reader=None, chat_format: str | None = None) -> "Tokenizer":
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        if reader is None:
            from findap_jax.checkpoints.gguf_io import open_gguf
            reader = open_gguf(path)
        f = reader.fields

        def get(key, default=None):
            return f[key].contents() if key in f else default

        model = get("tokenizer.ggml.model")
        if model is None:
            raise ValueError(f"{path}: GGUF metadata tokenizer.ggml.model is missing (no tokenizer to build)")
        if model != "gpt2":
            raise ValueError(f"{path}: tokenizer.ggml.model={model!r} is not supported "
                             "(only BPE 'gpt2' tokenizers are built from GGUF)")
        tokens, types = get("tokenizer.ggml.tokens"), get("tokenizer.ggml.token_type")
        for key, value in (("tokenizer.ggml.tokens", tokens), ("tokenizer.ggml.token_type", types)):
            if value is None:
                raise ValueError(f"{path}: GGUF metadata {key} is missing (no tokenizer to build)")
        if len(types) != len(tokens):
            raise ValueError(f"{path}: {len(tokens)} tokenizer.ggml.tokens but {len(types)} token types")
        merges = [tuple(m.split(" ", 1)) for m in get("tokenizer.ggml.merges", [])]
        bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                         fuse_unk=False, ignore_merges=False)
        tk = HFTokenizer(bpe)
        pre = get("tokenizer.ggml.pre", "gpt2")
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre == "smollm":
            tk.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level])
        elif pre in ("gpt2", "default"):
            tk.pre_tokenizer = byte_level
        elif pre in ("llama-bpe", "llama3"):
            tk.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        else:
            raise ValueError(f"{path}: tokenizer.ggml.pre={pre!r} is not supported "
                             "(supported: smollm, gpt2, llama-bpe)")
        tk.decoder = decoders.ByteLevel()
        # GGUF token types: 3 = control (special), 4 = user-defined (added, not special).
        tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                               for i, t in enumerate(types) if t == 3])
        tk.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                       for i, t in enumerate(types) if t == 4])
        bos = get("tokenizer.ggml.bos_token_id")
        eos = get("tokenizer.ggml.eos_token_id")
        eot = get("tokenizer.ggml.eot_token_id")
        eos_ids = [int(x) for x in (eos, eot) if x is not None]
        template = get("tokenizer.chat_template")
        bos_text = tokens[bos] if bos is not None else ""
        chat = _chat_format(chat_format, template, bos_text, None, f"{path}:tokenizer.chat_template")
        return cls(tk, bos_id=None if bos is None else int(bos), eos_ids=list(dict.fromkeys(eos_ids)),
                   pad_id=get("tokenizer.ggml.padding_token_id"), chat=chat,
                   chat_template=template, kind="hf", source=str(path),
                   add_bos=bool(get("tokenizer.ggml.add_bos_token", False)) and bos is not None)


def _chat_format(explicit, template, bos_text, saved, source) -> ChatFormat | None:
    if explicit:
        return ChatFormat.named(explicit, bos=bos_text)
    if saved:
        return ChatFormat(saved["name"], default_system=saved.get("default_system"),
                          bos=bos_text if saved["name"] == "llama3" else "")
    if template:
        return ChatFormat.from_jinja(template, bos=bos_text, source=source)
    return None
