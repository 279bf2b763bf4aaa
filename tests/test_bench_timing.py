"""bench/timing.py: the paired rounds give every run its warm-up, settle and timed calls in
turn, and the ratio summary reports the spread the median hides."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from timing import interleaved_rounds, interleaved_times, paired_ratios, ratio_summary  # noqa: E402


def test_rounds_alternate_runs_with_warm_up_and_settle_calls():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    ts = interleaved_rounds(runs, rounds=3, settle=2)
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert list(ts) == ["a", "b"] and all(len(v) == 3 and min(v) >= 0 for v in ts.values())


def test_paired_ratios_and_their_summary():
    ts = {"old": [10.0, 8.0, 12.0, 9.0], "new": [9.0, 8.4, 10.8, 8.1]}
    assert paired_ratios(ts, "new", "old") == pytest.approx([0.9, 1.05, 0.9, 0.9])
    assert ratio_summary(paired_ratios(ts, "new", "old")) == "0.900 (rounds 0.900-1.050, below 1 in 3 of 4)"


def test_interleaved_times_medians_match_the_rounds(monkeypatch):
    """A fake clock that each run moves on by its own cost: a costs 1, b costs 2 in the
    first round and 3 after, so b's median is 3 and its median ratio to a is 3."""
    import timing
    now = [0.0]
    cost = {"a": [1, 1, 1, 1], "b": [2, 2, 3, 3]}      # warm-up, then rounds
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def run(name):
        def fn():
            now[0] += cost[name].pop(0) if len(cost[name]) > 1 else cost[name][0]
        return fn
    med, ratio = interleaved_times({"a": run("a"), "b": run("b")}, rounds=3, settle=0)
    assert med == {"a": 1, "b": 3} and ratio == {"a": 1.0, "b": 3.0}
