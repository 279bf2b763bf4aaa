"""bench/matmul_libraries.py: every XLA variant's options are accepted by this jaxlib and
compute the same product (a renamed or dropped XLA option fails here, not in a bench run)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from matmul_libraries import XLA_VARIANTS, best_rates, operands, xla_matmul  # noqa: E402


@pytest.mark.parametrize("variant", sorted(XLA_VARIANTS))
def test_each_xla_variant_compiles_and_multiplies(variant):
    a, b = (np.asarray(x) for x in operands(32, 48, 16, "float32"))
    out = xla_matmul(32, 48, 16, "float32", XLA_VARIANTS[variant])()
    np.testing.assert_allclose(np.asarray(out), a @ b, rtol=1e-5, atol=1e-5)
    rates = best_rates({variant: xla_matmul(32, 48, 16, "bfloat16", XLA_VARIANTS[variant])}, 2.0 * 32 * 48 * 16, 2)
    assert list(rates) == [variant] and rates[variant] > 0
