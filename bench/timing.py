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


def interleaved_rounds(runs: dict, rounds: int, settle: int = 1) -> dict[str, list[float]]:
    """Wall times of each `runs[name]()` in `rounds` rounds that give every run a
    turn (after one warm-up call each). On a shared machine whose speed drifts by
    tens of percent within minutes, the paired per-round ratio is what stays comparable;
    timing one implementation's steps and then the other's is not.

    Each turn makes `settle` untimed calls before its timed one. A stack's first step
    after the other stack ran re-faults the memory it freed at its previous step's end:
    on a VM with free-page reporting (this machine: Firecracker, page_reporting_order=11)
    memory freed for more than a few seconds goes back to the host, and faulting it in
    again cost an XLA train step 9-12 s of system time instead of 1 (4.4 GB of
    temporaries per step; torch's steps lose less, reusing memory within the step). A
    training job runs its steps back to back and never pays that, so the timed step is
    the one after a settle step."""
    for fn in runs.values():
        fn()
    ts = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            for _ in range(settle):
                fn()
            t = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t)
    return ts


def interleaved_times(runs: dict, rounds: int, settle: int = 1) -> tuple[dict, dict]:
    """The median of each run's `interleaved_rounds` times, and the median over rounds of
    each run's time divided by the first run's in that round."""
    ts = interleaved_rounds(runs, rounds, settle)
    first = next(iter(runs))
    ratios = {name: statistics.median(paired_ratios(ts, name, first)) for name in runs}
    return {name: statistics.median(v) for name, v in ts.items()}, ratios


def paired_ratios(ts: dict, name: str, base: str) -> list[float]:
    """Run `name`'s time over run `base`'s, round by round."""
    return [a / b for a, b in zip(ts[name], ts[base])]


def ratio_summary(ratios: list[float]) -> str:
    """The median per-round ratio with its spread and a sign count, e.g. "0.950 (rounds
    0.912-1.021, below 1 in 3 of 4)". On this machine a 5% change hides in the noise of
    3-4 rounds; the spread says whether a median is worth a claim."""
    below = sum(r < 1 for r in ratios)
    return (f"{statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}, "
            f"below 1 in {below} of {len(ratios)})")


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
