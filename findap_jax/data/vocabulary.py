"""`seqio.Vocabulary` over our `Tokenizer` (HF tokenizer.json, SentencePiece or GGUF), so
any seqio task can use any model's tokenizer. TF-side encoding goes through
`tf.numpy_function`; the tasks here tokenize in Python before tf.data, so that path is
only for seqio utilities that need it."""
from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from findap_jax.data.tokenizer import Tokenizer


class TokenizerVocabulary(seqio.Vocabulary):
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        super().__init__(extra_ids=0)

    @property
    def bos_id(self):
        return self.tokenizer.bos_id

    @property
    def eos_id(self):
        return self.tokenizer.eos_id

    @property
    def unk_id(self):
        return None

    @property
    def _base_vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def _encode(self, s: str):
        return self.tokenizer.encode(s)

    def _decode(self, ids):
        return self.tokenizer.decode([int(i) for i in ids])

    def _encode_tf(self, s):
        def enc(x):
            return np.asarray(self.tokenizer.encode(x.decode("utf-8")), np.int32)
        out = tf.numpy_function(enc, [s], tf.int32, stateful=False)
        return tf.ensure_shape(out, [None])

    def _decode_tf(self, ids):
        def dec(x):
            return np.asarray(self.tokenizer.decode(x.tolist()).encode("utf-8"), dtype=object)
        return tf.numpy_function(dec, [ids], tf.string, stateful=False)

    def __eq__(self, other):
        return isinstance(other, TokenizerVocabulary) and other.tokenizer is self.tokenizer

    def __hash__(self):
        return id(self.tokenizer)
