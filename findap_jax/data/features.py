"""seqio feature converters: task features -> what the model and losses read.

LM rows (CPT, chat, joint mixtures): {"targets", "loss_mask"} -> packed (or padded) rows
    input_tokens, target_tokens, loss_weights, segment_ids, positions   [L]
where target_tokens[i] is token i+1 of the same segment and loss_weights[i] its loss
mask; across a segment boundary the weight is 0 (the first label of every packed
document is ignored). Preference pairs: the same five features per side, prefixed
`chosen_` and `rejected_`, padded (never packed).
"""
from __future__ import annotations

import seqio
import tensorflow as tf

LM_FEATURES = ("input_tokens", "target_tokens", "loss_weights", "segment_ids", "positions")


def _shift(tokens, mask, seg, pos) -> dict:
    nxt = lambda x: tf.concat([x[1:], tf.zeros([1], x.dtype)], axis=0)  # noqa: E731
    same = tf.cast((nxt(seg) == seg) & (nxt(seg) > 0), tf.int32)
    return {"input_tokens": tokens, "target_tokens": nxt(tokens) * same,
            "loss_weights": nxt(mask) * same, "segment_ids": seg, "positions": pos}


class LMFeatureConverter(seqio.FeatureConverter):
    """Causal-LM rows for CPT, SFT and joint mixtures (pack=True packs documents)."""
    TASK_FEATURES = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
                     "loss_mask": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
    MODEL_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for k in LM_FEATURES}
    PACKING_FEATURE_DTYPES = {"segment_ids": tf.int32, "positions": tf.int32}

    def _convert_features(self, ds, task_feature_lengths):
        length = task_feature_lengths["targets"]
        # seqio's packing takes 0 for padding and drops it, so shift every value by one:
        # token id 0 and loss-mask 0 survive, and padding comes back as 0 below.
        ds = ds.map(lambda ex: {"targets": ex["targets"] + 1, "loss_mask": ex["loss_mask"] + 1},
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = self._pack_or_pad(ds, {"targets": length, "loss_mask": length})

        def convert(ex):
            tokens = tf.maximum(ex["targets"] - 1, 0)
            mask = tf.maximum(ex["loss_mask"] - 1, 0)
            if self.pack:
                seg, pos = ex["targets_segment_ids"], ex["targets_positions"]
            else:
                seg = tf.cast(ex["targets"] > 0, tf.int32)
                pos = tf.range(length, dtype=tf.int32) * seg
            return _shift(tokens, mask, seg, pos)

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths):
        return {k: task_feature_lengths["targets"] for k in LM_FEATURES}


class PreferenceFeatureConverter(seqio.FeatureConverter):
    """Chosen/rejected rows padded to the same length, each with its completion mask."""
    TASK_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
                     for k in ("chosen_tokens", "chosen_mask", "rejected_tokens", "rejected_mask")}
    MODEL_FEATURES = {f"{side}_{k}": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
                      for side in ("chosen", "rejected") for k in LM_FEATURES}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kw):
        if pack:
            raise ValueError("preference pairs are padded, not packed (pack must be False)")
        super().__init__(pack=False, **kw)

    def _convert_features(self, ds, task_feature_lengths):
        length = task_feature_lengths["chosen_tokens"]

        def convert(ex):
            out = {}
            for side in ("chosen", "rejected"):
                tok, mask = ex[f"{side}_tokens"], ex[f"{side}_mask"]
                n = tf.shape(tok)[0]
                pad = [[0, length - n]]
                seg = tf.pad(tf.ones([n], tf.int32), pad)
                feats = _shift(tf.pad(tok, pad), tf.pad(mask, pad), seg,
                               tf.range(length, dtype=tf.int32) * seg)
                out.update({f"{side}_{k}": v for k, v in feats.items()})
            return out

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths):
        return {k: task_feature_lengths["chosen_tokens"] for k in self.MODEL_FEATURES}
