"""Prompts that start with the same tokens: several questions about one document
(TAT-QA), the turns of one conversation (ConvFinQA), one instruction before many inputs.
Their shared start is prefilled once per batch and its keys/values copied to each row,
so only the rest of every prompt is run through the model again."""
from __future__ import annotations

from collections.abc import Sequence

MIN_SHARED = 32   # a shorter common start is not worth a second prefill call


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """Length of the common start of a and b, at most `limit`."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def prefix_groups(prompts: Sequence[Sequence[int]], min_shared: int = MIN_SHARED) -> list[tuple[int, list[int]]]:
    """(shared length, row indices) groups covering every prompt once. In token order,
    a prompt joins the previous group when it shares at least `min_shared` tokens with
    the group and at least half of the group's shared start (a longer common start is
    not given up for a shorter one). Each row keeps at least its last token unshared:
    the step that extends a copied prefix samples from it."""
    groups: list[tuple[int, list[int]]] = []
    for i in sorted(range(len(prompts)), key=lambda r: list(prompts[r])):
        if groups:
            shared, rows = groups[-1]
            n = common_prefix(prompts[rows[0]], prompts[i], shared)
            if n >= min_shared and 2 * n >= shared:
                groups[-1] = (n, rows + [i])
                continue
        groups.append((len(prompts[i]), [i]))
    return [(min([shared] + [len(prompts[r]) - 1 for r in rows]), rows) for shared, rows in groups]


def shared_order(prompts: Sequence[Sequence[int]], min_shared: int = MIN_SHARED) -> list[int]:
    """An order that puts each group's rows next to each other, groups by shared length
    and rows within a group by length (little padding in either prefill)."""
    groups = sorted(prefix_groups(prompts, min_shared), key=lambda g: (g[0], len(g[1])))
    return [r for _, rows in groups for r in sorted(rows, key=lambda r: len(prompts[r]))]
