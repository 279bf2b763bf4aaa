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
