"""The CPU benchmark's case module (:mod:`ufo_mm.benchmark.harness` runs
:func:`run_case` in a child process): one case inside the process that runs
it: build, warm up, time, read the memory high-water mark; a group of cases
timed interleaved; the reference GEMM. Each returns a dict of measurements
(``status='ok'``)."""
import contextlib
import gc
import os
import tempfile
import time

from ufo_mm.analysis.process_stats import cpu_jiffies, other_cpu_cores, peak_rss_bytes, rss_bytes

from .harness import error_status
from .zoo import build_step


def count_flops(fn) -> int:
    """FLOPs (2 per multiply-add) of one call, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def warm_up(fn, n: int) -> list:
    """Run ``fn`` ``n`` times; the duration (s) of each run."""
    durations = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - t0)
    return durations


def warm_ups(spec: dict, compiled: bool) -> int:
    """Untimed runs before the timing: ``spec['warmup']``, at least 2 for a
    compiled case (its first run is the compile)."""
    return max(2 if compiled else 0, spec['warmup'])


def capped_repeats(spec: dict, per_run) -> int:
    """``spec['repeats']`` timed runs, fewer (at least one) when runs as long as
    ``per_run`` (s; the last warm-up) would take more than ``spec['max_timed_s']``."""
    if per_run is None or not spec.get('max_timed_s'):
        return spec['repeats']
    return max(1, min(spec['repeats'], int(spec['max_timed_s'] / max(per_run, 1e-6))))


def time_stats(times) -> dict:
    """Median, min (ms) and count of the timed runs ``times`` (s)."""
    times = sorted(times)
    return dict(time_ms_median=1e3 * times[len(times) // 2], time_ms_min=1e3 * times[0],
                repeats=len(times))


@contextlib.contextmanager
def fresh_compile_cache(enabled: bool):
    """With ``enabled``: inductor's cache in a new directory, removed afterwards,
    so that a compiled case's first call is a cold compile (what a first run
    meets), not a load of what an earlier case compiled."""
    if not enabled:
        yield
        return
    old = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    with tempfile.TemporaryDirectory(prefix='benchmark_inductor_') as cache:
        os.environ['TORCHINDUCTOR_CACHE_DIR'] = cache
        try:
            yield
        finally:
            if old is None:
                os.environ.pop('TORCHINDUCTOR_CACHE_DIR')
            else:
                os.environ['TORCHINDUCTOR_CACHE_DIR'] = old


def precision_context(spec: dict):
    """No autograd (a training step turns it on inside), bf16 autocast for the bf16 precisions."""
    import torch
    bf16 = spec['precision'].startswith('bf16')
    context = contextlib.ExitStack()
    context.enter_context(torch.no_grad())
    context.enter_context(torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16))
    return context


def run_case(spec: dict) -> dict:
    """Build, warm up and time one case (``zoo.build_step``) in this process;
    returns the measurements. A compiled case's first call is ``compile_s``.
    ``model='gemm'``: :func:`run_gemm`; ``model='group'``: :func:`run_group`."""
    import torch
    torch.set_num_threads(spec['threads'])
    if spec['model'] == 'gemm':
        return run_gemm(spec)
    if spec['model'] == 'group':
        return run_group(spec)
    times = []
    with fresh_compile_cache(spec.get('compile')):
        step = build_step(spec)
        gc.collect()
        base = rss_bytes()
        with precision_context(spec):
            durations = warm_up(step, warm_ups(spec, spec.get('compile')))
            repeats = capped_repeats(spec, durations[-1] if durations else None)
            jiffies, t_start = cpu_jiffies(), time.perf_counter()
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            other = other_cpu_cores(jiffies, t_start)
            peak = peak_rss_bytes()
            gflops = None
            if spec.get('flops'):
                gflops = count_flops(step) / 1e9
    return dict(status='ok', **time_stats(times), peak_rss_mb=peak / 2**20,
                base_rss_mb=base / 2**20, fwd_mem_mb=(peak - base) / 2**20, gflops=gflops,
                other_cpu=other, threads=torch.get_num_threads(),
                compile_s=durations[0] if spec.get('compile') else None)


def run_group(spec: dict) -> dict:
    """Time several cases on the same input in one process, interleaved: the
    ``spec['members']`` (dicts of model, with_cp, compile; the input, batch,
    mode and precision are ``spec``'s), after a warm-up of each, run
    ``repeats`` rounds of one call each, in an order rotated by one each
    round. A member whose last warm-up took longer than ``max_timed_s / repeats``
    takes part in fewer rounds (at least one); one whose build, compile or
    warm-up raised gets that as its status, the others go on. Returns
    ``members``: the measurements of each, in order (``compile_s``: the
    first call of a compiled member)."""
    import torch
    torch.set_num_threads(spec['threads'])
    members = spec['members']
    results = [{} for _ in members]
    steps, rounds = {}, {}
    with fresh_compile_cache(any(m.get('compile') for m in members)), precision_context(spec):
        for i, member in enumerate(members):
            try:
                steps[i] = build_step(dict(spec, **member))
                durations = warm_up(steps[i], max(1, warm_ups(spec, member.get('compile'))))
            except Exception as e:  # a failing compile is the member's status
                steps.pop(i, None)
                results[i]['status'] = error_status(e)
                continue
            rounds[i] = capped_repeats(spec, durations[-1])
            if member.get('compile'):
                results[i]['compile_s'] = durations[0]
        times = {i: [] for i in steps}
        order = list(steps)
        jiffies, t_start = cpu_jiffies(), time.perf_counter()
        for r in range(max(rounds.values(), default=0)):
            for i in order[r % len(order):] + order[:r % len(order)]:
                if len(times[i]) < rounds[i]:
                    t0 = time.perf_counter()
                    steps[i]()
                    times[i].append(time.perf_counter() - t0)
        other = other_cpu_cores(jiffies, t_start)
    timing = f'interleaved, {len(members)} model' + ('s' if len(members) > 1 else '')
    for i, ts in times.items():
        results[i].update(status='ok', **time_stats(ts), timing=timing)
    return dict(status='ok', other_cpu=other, threads=torch.get_num_threads(), members=results)


def run_gemm(spec: dict) -> dict:
    """The reference GEMM rate: an n^3 matmul by torch.mm and by oneDNN's GEMM
    (the one the fused layers use), the faster of the two (a higher reference
    makes the FLOP-rate target harder, not easier)."""
    import torch
    n = spec.get('gemm_n', 4096)
    dtype = torch.bfloat16 if spec['precision'].startswith('bf16') else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    candidates = {'torch.mm': lambda: a @ b}
    from ufo_mm import cpu_features
    if hasattr(torch.ops.mkldnn, '_linear_pointwise') and torch.backends.mkldnn.is_available() \
            and (dtype == torch.float32 or cpu_features.onednn_bf16_kernels()):
        bt = b.t().contiguous()  # linear(a, W) = a @ W^T
        candidates['onednn'] = lambda: torch.ops.mkldnn._linear_pointwise(
            a, bt, None, 'none', [], '')
    rates, best = {}, None
    for name, fn in candidates.items():
        warm_up(fn, max(1, spec['warmup']))
        times = []
        for _ in range(max(3, spec['repeats'])):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        stats = time_stats(times)
        rates[name] = 2 * n ** 3 / stats['time_ms_median'] / 1e6
        if best is None or rates[name] > rates[best[0]]:
            best = (name, stats)
    name, stats = best
    return dict(status='ok', **stats, gflops=2 * n ** 3 / 1e9, gflop_per_s=rates[name],
                threads=torch.get_num_threads(),
                note=', '.join(f'{k} {v:.1f} GFLOP/s' for k, v in rates.items()))
