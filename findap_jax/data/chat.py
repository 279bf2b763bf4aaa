"""Chat templates per model family, rendered as (text, is_assistant_target) segments.

Written in Python rather than evaluated from Jinja so that the assistant-only loss mask
falls out of the rendering. `ChatFormat.from_jinja` recognises a model's own template
(from tokenizer_config.json or GGUF metadata); tests check the rendered string equals
transformers' Jinja rendering of that template.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

ROLES = ("system", "user", "assistant")
Message = dict  # {"role": str, "content": str}


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    name: str                      # "llama3" or "chatml"
    default_system: str | None = None  # ChatML models like SmolLM2 add one when absent
    bos: str = ""                  # text of the BOS token the template starts with

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool = False,
                 source: str = "messages") -> list[tuple[str, bool]]:
        """Render to [(text, trainable)]; trainable covers assistant content + end token."""
        check_messages(messages, source)
        if self.name == "llama3":
            out = [(self.bos, False)] if self.bos else []
            for m in messages:
                out.append((f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n", False))
                out.append((m["content"].strip() + "<|eot_id|>", m["role"] == "assistant"))
            if add_generation_prompt:
                out.append(("<|start_header_id|>assistant<|end_header_id|>\n\n", False))
            return out
        if self.name == "chatml":
            out = []
            if self.default_system is not None and messages and messages[0]["role"] != "system":
                out.append((f"<|im_start|>system\n{self.default_system}<|im_end|>\n", False))
            for m in messages:
                out.append((f"<|im_start|>{m['role']}\n", False))
                out.append((m["content"] + "<|im_end|>", m["role"] == "assistant"))
                out.append(("\n", False))
            if add_generation_prompt:
                out.append(("<|im_start|>assistant\n", False))
            return out
        raise ValueError(f"unknown chat format {self.name!r}")

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return "".join(t for t, _ in self.segments(messages, add_generation_prompt))

    @property
    def end_of_turn(self) -> str:
        return "<|eot_id|>" if self.name == "llama3" else "<|im_end|>"

    @classmethod
    def from_jinja(cls, template: str, bos: str = "", source: str = "chat_template") -> "ChatFormat":
        if "<|start_header_id|>" in template and "<|eot_id|>" in template:
            if "Cutting Knowledge Date" in template or "tools" in template:
                raise ValueError(f"{source}: the Llama-3.1 tool-use template is not supported; "
                                 "pass chat_format='llama3' to use the Llama-3 template")
            return cls("llama3", bos=bos)
        if "<|im_start|>" in template and "<|im_end|>" in template:
            # the default system turn: the first literal one (Qwen-style sources write the
            # newline as a "\\n" escape; the turn built from the caller's system message has
            # a "+" or "{{" in it)
            default = None
            for m in re.finditer(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", template, re.S):
                if "{{" not in m.group(1) and "+" not in m.group(1):
                    default = m.group(1).replace("\\n", "\n").replace("\\'", "'")
                    break
            return cls("chatml", default_system=default)
        raise ValueError(f"{source}: unrecognised chat template (supported: Llama-3, ChatML); "
                         "pass chat_format= explicitly")

    @classmethod
    def named(cls, name: str, bos: str = "") -> "ChatFormat":
        if name == "llama3":
            return cls("llama3", bos=bos)
        if name == "chatml":
            return cls("chatml")
        if name == "smollm":
            return cls("chatml", default_system=SMOLLM_SYSTEM)
        raise ValueError(f"unknown chat format {name!r}; choose llama3, chatml or smollm")


SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def check_messages(messages, source: str = "messages") -> None:
    """Validate a chat; errors name the message index and field."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{source}: expected a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"{source}[{i}]: expected an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"{source}[{i}].role: unknown role {role!r} (allowed: {ROLES})")
        if not isinstance(content, str):
            raise ValueError(f"{source}[{i}].content: expected a string, got {type(content).__name__}")
