"""Hypothesis pieces shared by the fuzz tests: settings, arbitrary JSON values, and
records that miss a schema by one field."""
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def json_values(text_size: int):
    """Any JSON value: scalars (big ints, any float, short text) nested in lists and dicts."""
    return st.recursive(
        st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=text_size),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8)


def _mutate(rec, key, value, drop):
    """Miss the schema by one field: drop it, or give it any JSON value (or leave it alone)."""
    if key is None:
        return rec
    rec = dict(rec)
    if drop:
        rec.pop(key, None)
    else:
        rec[key] = value
    return rec


def near_misses(valid, fields, values):
    """Valid records with one of `fields` dropped or replaced by one of `values`."""
    return st.builds(_mutate, valid, st.sampled_from([None, None, *fields]), values, st.booleans())
