"""One benchmark case inside the process that runs it: build, warm up, time,
read the memory high-water mark; a group of backbones timed interleaved; the
reference GEMM. Each returns a dict of measurements (``status='ok'``)."""
import gc
import time

from ufo_mm.analysis.process_stats import cpu_jiffies, other_cpu_cores, peak_rss_bytes, rss_bytes

from .zoo import MODELS, build_backbone, build_full_model, make_forward


def count_flops(fn) -> int:
    """FLOPs (2 per multiply-add) of one call, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def warm_up(fn, n: int):
    """Run ``fn`` ``n`` times; the duration (s) of the first run, None if n == 0."""
    first = None
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0 if first is None else first
    return first


def capped_repeats(spec: dict, first) -> int:
    """``spec['repeats']`` timed runs, fewer (at least one) when runs as long as
    the first warm-up would take more than ``spec['max_timed_s']``."""
    if first is None or not spec.get('max_timed_s'):
        return spec['repeats']
    return max(1, min(spec['repeats'], int(spec['max_timed_s'] / max(first, 1e-6))))


def time_stats(times) -> dict:
    """Median, min (ms) and count of the timed runs ``times`` (s)."""
    times = sorted(times)
    return dict(time_ms_median=1e3 * times[len(times) // 2], time_ms_min=1e3 * times[0],
                repeats=len(times))


def run_case(spec: dict) -> dict:
    """Build, warm up and time one case in this process; returns the measurements."""
    import torch
    torch.set_num_threads(spec['threads'])
    if spec['model'] == 'gemm':
        return run_gemm(spec)
    if spec['model'] == 'group':
        return run_group(spec)
    name, H, W = spec['model'], spec['height'], spec['width']
    if MODELS[name]['kind'] == 'backbone':
        model = build_backbone(name)
    else:
        model = build_full_model(name)
    fwd = make_forward(name, model, H, W)
    gc.collect()
    base = rss_bytes()
    bf16 = spec['precision'].startswith('bf16')
    times = []
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
        repeats = capped_repeats(spec, warm_up(fwd, spec['warmup']))
        jiffies, t_start = cpu_jiffies(), time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            fwd()
            times.append(time.perf_counter() - t0)
        other = other_cpu_cores(jiffies, t_start)
        peak = peak_rss_bytes()
        gflops = None
        if spec.get('flops'):
            gflops = count_flops(fwd) / 1e9
    return dict(status='ok', **time_stats(times), peak_rss_mb=peak / 2**20,
                base_rss_mb=base / 2**20, fwd_mem_mb=(peak - base) / 2**20, gflops=gflops,
                other_cpu=other, threads=torch.get_num_threads())


def run_group(spec: dict) -> dict:
    """Time several models on the same input in one process, interleaved: after
    a warm-up of each, ``repeats`` rounds run every model once, in an order
    rotated by one each round. A model whose warm-up took longer than
    ``max_timed_s / repeats`` takes part in fewer rounds (at least one).
    Returns {model: measurements}."""
    import torch
    torch.set_num_threads(spec['threads'])
    H, W = spec['height'], spec['width']
    names = spec['models']
    fwds = {n: make_forward(n, build_backbone(n), H, W) for n in names}
    bf16 = spec['precision'].startswith('bf16')
    times = {n: [] for n in names}
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
        rounds = {n: capped_repeats(spec, warm_up(fwds[n], max(1, spec['warmup'])))
                  for n in names}
        jiffies, t_start = cpu_jiffies(), time.perf_counter()
        for r in range(max(rounds.values())):
            for n in names[r % len(names):] + names[:r % len(names)]:
                if len(times[n]) < rounds[n]:
                    t0 = time.perf_counter()
                    fwds[n]()
                    times[n].append(time.perf_counter() - t0)
        other = other_cpu_cores(jiffies, t_start)
    timing = f'interleaved, {len(names)} model' + ('s' if len(names) > 1 else '')
    return dict(status='ok', other_cpu=other, threads=torch.get_num_threads(),
                models={n: dict(time_stats(ts), timing=timing) for n, ts in times.items()})


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
