"""Shared timing helper of the benchmark scripts."""
import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls after one warm-up (compile) call."""
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)
