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


def interleaved_times(runs: dict, rounds: int) -> tuple[dict, dict]:
    """Median wall time of each `runs[name]()` over `rounds` rounds that call every run once
    in turn (after one warm-up call each), and the median over rounds of each run's time
    divided by the first run's in that round. On a shared machine whose speed drifts by
    tens of percent within minutes, the paired per-round ratio is what stays comparable;
    timing one implementation's steps and then the other's is not."""
    for fn in runs.values():
        fn()
    ts = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t)
    first = next(iter(runs))
    ratios = {name: statistics.median(a / b for a, b in zip(ts[name], ts[first])) for name in runs}
    return {name: statistics.median(v) for name, v in ts.items()}, ratios


def cpu_summary() -> str:
    """The CPU model and the vector extensions that decide matmul speed, for the bench
    header: machines of one kind differ (AVX-512 with native bf16 dots one day, AVX2 only
    the next, where bf16 matmuls are emulated and slower than fp32)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "cpu: unknown"
    lines = text.splitlines()
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)}
    cores = sum(ln.startswith("processor") for ln in lines)
    flags = set(fields.get("flags", "").split())
    isa = " ".join(x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if x in flags) or "no AVX2"
    return (f"cpu: {fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}), {cores} logical cores, {isa}")
