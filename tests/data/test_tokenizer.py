"""Tokenizers and chat templates against transformers' own rendering, and loss masks."""
import numpy as np
import pytest

from findap_jax.data.chat import ChatFormat
from findap_jax.data.tokenizer import Tokenizer
from tests.helpers import save_tiny_tokenizer

CHAT = [
    {"role": "system", "content": "You are a financial analyst."},
    {"role": "user", "content": "What is EBITDA?"},
    {"role": "assistant", "content": "Earnings before interest, taxes, depreciation and amortization."},
    {"role": "user", "content": "And the margin?"},
    {"role": "assistant", "content": " EBITDA divided by revenue. "},
]


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_chat_template_matches_transformers(tmp_path, family):
    from transformers import AutoTokenizer

    save_tiny_tokenizer(tmp_path, family)
    ours, ref = Tokenizer.from_dir(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert ours.chat.name == family
    for msgs in (CHAT, CHAT[1:2], CHAT[:3]):
        for gen in (False, True):
            text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert ours.apply_chat_template(msgs, add_generation_prompt=gen) == text
            ids, mask = ours.encode_chat(msgs, add_generation_prompt=gen)
            assert ids == ref.encode(text, add_special_tokens=False)
            assert len(mask) == len(ids)


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_loss_mask_covers_exactly_assistant_turns(tmp_path, family):
    tok = Tokenizer.from_dir(save_tiny_tokenizer(tmp_path, family))
    ids, mask = tok.encode_chat(CHAT)
    end = tok.chat.end_of_turn
    masked = [i for i, m in zip(ids, mask) if m]
    strip = (lambda s: s.strip()) if family == "llama3" else (lambda s: s)
    want = "".join(strip(m["content"]) + end for m in CHAT if m["role"] == "assistant")
    assert tok.decode(masked, skip_special_tokens=False) == want
    # every masked run ends with the end-of-turn token, and nothing else is masked
    eot = tok.token_to_id(end)
    runs = np.split(np.asarray(ids), np.flatnonzero(np.diff(np.asarray(mask)) != 0) + 1)
    runs_mask = np.split(np.asarray(mask), np.flatnonzero(np.diff(np.asarray(mask)) != 0) + 1)
    assert sum(int(m[0]) for m in runs_mask) == 2
    assert all(r[-1] == eot for r, m in zip(runs, runs_mask) if m[0])


def test_unknown_role_and_bad_content_name_the_message(tmp_path):
    tok = Tokenizer.from_dir(save_tiny_tokenizer(tmp_path))
    with pytest.raises(ValueError, match=r"messages\[1\]\.role: unknown role 'bot'"):
        tok.encode_chat([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[0\]\.content: expected a string"):
        tok.encode_chat([{"role": "user", "content": 3}])


def test_unrecognised_template_is_an_error():
    with pytest.raises(ValueError, match="unrecognised chat template"):
        ChatFormat.from_jinja("{{ messages }}")


# Qwen2.5's template writes newlines as "\n" escapes inside its Jinja string literals and
# builds a system turn from the caller's message before its literal default one
QWEN_STYLE = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
              "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}"
              "{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
              "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}"
              "{%- endfor %}")


@pytest.mark.parametrize("system", [False, True])
def test_escaped_newline_template_keeps_its_default_system_turn(system):
    import jinja2

    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    msgs = [{"role": "system", "content": "Be brief."}] * system + msgs
    fmt = ChatFormat.from_jinja(QWEN_STYLE)
    assert fmt.default_system == "You are Qwen, a helpful assistant."
    assert fmt.render(msgs) == jinja2.Environment().from_string(QWEN_STYLE).render(messages=msgs)


def test_save_and_reload_keeps_encoding_and_chat(tmp_path):
    tok = Tokenizer.from_dir(save_tiny_tokenizer(tmp_path / "a", "llama3"))
    tok.save(tmp_path / "b")
    again = Tokenizer.from_dir(tmp_path / "b")
    text = "Revenue rose 12% to $3.4 billion."
    assert again.encode(text) == tok.encode(text)
    assert again.encode_chat(CHAT) == tok.encode_chat(CHAT)
    assert again.decode(tok.encode(text)) == text


def test_sentencepiece_backend(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["Net revenue increased by 5 percent in the quarter."] * 50
                                + ["Operating cash flow was 3.2 billion dollars."] * 50))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=40, minloglevel=2, user_defined_symbols=["<|im_start|>", "<|im_end|>"])
    (tmp_path / "m").mkdir()
    (tmp_path / "sp.model").rename(tmp_path / "m" / "tokenizer.model")
    tok = Tokenizer.from_dir(tmp_path / "m", chat_format="chatml")
    text = "Net revenue increased."
    assert tok.decode(tok.encode(text)) == text
    ids, mask = tok.encode_chat([{"role": "user", "content": "Net revenue?"},
                                 {"role": "assistant", "content": "Operating cash flow."}])
    assert tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False).startswith(
        "Operating cash flow.")
    assert tok.encode(text, add_bos=True)[0] == tok.bos_id
