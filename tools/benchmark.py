"""CPU inference benchmark: UFO-ViT backbones against peer backbones, and full models.

For every (model, input size, precision) case it measures, in eval mode under
``torch.no_grad()``, batch 1:
  * memory, alone in a fresh process: the resident-set high-water mark
    (``ru_maxrss``) after ``--warmup`` untimed runs and one timed run
    (``time_ms_alone``), and the same minus the resident set measured right
    after the model and the input were built (``fwd_mem_mb``: what the forward
    itself needed);
  * forward time of the backbones, interleaved: one fresh process per (input
    size, precision) builds UFO-ViT and every peer that ran there, warms each
    up, then runs ``--repeats`` rounds of one forward per model, in an order
    rotated every round; ``time_ms_median`` (and min) per model over its
    rounds. A slow phase of a shared machine then falls on UFO-ViT and its
    peers alike instead of on whichever case happened to run in it (the
    ratios are what matter). The full models, compared with nothing, are
    timed alone: median of ``--repeats`` runs.

Precisions: fp32, and bf16 autocast (``torch.autocast('cpu', dtype=torch.bfloat16)``)
where this CPU computes bf16 natively (AVX512-BF16 / AMX; ``ufo_mm.cpu_features``).
On other CPUs bf16 is emulated, many times slower than fp32: the default runs
fp32 only there, and ``--precisions bf16`` asked for explicitly runs it as
``bf16-emulated`` (its own rows, tables and CSV value, never beside native
ones). Every model runs under the same settings. ``torch.set_num_threads(--threads)``
(default 2) is fixed and printed.

Cases whose time or memory, extrapolated from the same model's previous
(smaller) size, would exceed ``--max-forward-s`` / ``--mem-budget-gb`` are
skipped and marked so; a case whose resident set passes ``--mem-kill-gb``
is killed. This keeps O(N^2) attention (ViT-S/16 at 2048x2048 needs several
16k x 16k attention maps) from taking a shared machine down.

It prints a table with peer/UFO-ViT-S12/16 ratios, time(2048)/time(1024) of
UFO-ViT-S12/16, and the FLOP rate of its 1024x1024 forward against a plain
4096^3 fp32 matmul measured in the same run; writes ``benchmark.csv``,
``benchmark.png`` (time and memory against resolution, log-log),
``benchmark_summary.txt`` and ``benchmark_tables.md`` to ``--out-dir``.

FLOPs here are FLOPs (2 per multiply-add), counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions).
``tools/get_flops.py`` prints MACs (mmengine's convention) instead.

Usage:
    python tools/benchmark.py --out-dir docs/performance  # full run; leave the machine idle
    python tools/benchmark.py --quick --out-dir /tmp/bench         # smoke run
    python tools/benchmark.py --models ufo_s12 swin_t --sizes 1024 --precisions fp32
"""
import argparse
import csv
import gc
import json
import math
import multiprocessing as mp
import os
import os.path as osp
import resource
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# name -> how to build it and how its cost grows with the number of pixels P
# (time_exp / mem_exp: cost ~ P ** exp; used only to decide what to skip).
MODELS = {
    'ufo_s12': dict(label='UFO-ViT-S12/16', kind='backbone', time_exp=1, mem_exp=1),
    'ufo_t12': dict(label='UFO-ViT-T12/16', kind='backbone', time_exp=1, mem_exp=1),
    'swin_t': dict(label='Swin-T', kind='backbone', time_exp=1, mem_exp=1),
    'pvtv2_b2': dict(label='PVTv2-b2', kind='backbone', time_exp=2, mem_exp=2),
    'mit_b2': dict(label='MiT-b2', kind='backbone', time_exp=2, mem_exp=2),
    'vit_s': dict(label='ViT-S/16 (softmax)', kind='backbone', time_exp=2, mem_exp=2),
    'ufo_s12_softmax': dict(label='S12/16 softmax attn', kind='backbone', time_exp=2,
                            mem_exp=1),
    'ufo_s12_xca': dict(label='S12/16 XCA attn', kind='backbone', time_exp=1, mem_exp=1),
    'maskrcnn_ufo_s12': dict(label='Mask R-CNN UFO-S12/16', kind='detector', time_exp=1,
                             mem_exp=1),
    'upernet_ufo_s12': dict(label='UperNet UFO-S12/16', kind='segmentor', time_exp=1,
                            mem_exp=1),
}
REFERENCE = 'ufo_s12'
BACKBONES = [k for k, v in MODELS.items() if v['kind'] == 'backbone']
# what UFO-ViT-S12/16 is compared with: every backbone but itself and its smaller sibling
PEERS = [k for k in BACKBONES if k not in (REFERENCE, 'ufo_t12')]
FULL_MODELS = [k for k, v in MODELS.items() if v['kind'] != 'backbone']
DET_CONFIG = 'configs/ufo_vit/mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-3x_coco.py'
SEG_CONFIG = 'configs/ufo_vit/upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'
CSV_COLUMNS = ['model', 'label', 'kind', 'precision', 'height', 'width', 'megapixels',
               'threads', 'status', 'time_ms_median', 'time_ms_min', 'repeats', 'timing',
               'time_ms_alone', 'peak_rss_mb', 'base_rss_mb', 'fwd_mem_mb', 'gflops', 'other_cpu',
               'time_ratio_vs_ufo_s12', 'mem_ratio_vs_ufo_s12', 'note']


# --------------------------------------------------------------------------- model builders
def _ufo(**kw):
    from ufo_mm.models import UFOViT
    return UFOViT(**kw)


def build_backbone(name: str):
    """The nn.Module of a backbone case, random weights, eval mode."""
    if name == 'ufo_s12':
        m = _ufo(arch='small_12_p16')
    elif name == 'ufo_t12':
        m = _ufo(arch='tiny_12_p16')
    elif name == 'ufo_s12_softmax':
        m = _ufo(arch='small_12_p16', attn_type='softmax')
    elif name == 'ufo_s12_xca':
        m = _ufo(arch='small_12_p16', attn_type='xca')
    elif name == 'swin_t':
        from mmdet.models.backbones import SwinTransformer
        m = SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                            window_size=7, out_indices=(0, 1, 2, 3))
    elif name == 'pvtv2_b2':
        from mmdet.models.backbones import PyramidVisionTransformerV2
        m = PyramidVisionTransformerV2(embed_dims=64, num_layers=[3, 4, 6, 3],
                                       num_heads=[1, 2, 5, 8])
    elif name == 'mit_b2':
        from mmseg.models.backbones import MixVisionTransformer
        m = MixVisionTransformer(embed_dims=64, num_layers=[3, 4, 6, 3], num_heads=[1, 2, 5, 8])
    elif name == 'vit_s':
        from mmseg.models.backbones import VisionTransformer
        # img_size 224: a 14x14 position table, bicubically resized to the input's grid.
        m = VisionTransformer(img_size=224, patch_size=16, embed_dims=384, num_layers=12,
                              num_heads=6, out_indices=(2, 5, 8, 11))
    else:
        raise KeyError(f'unknown backbone {name!r}; valid: {BACKBONES}')
    m.eval()  # on its own line: mmdet's SwinTransformer.train() returns None
    return m


def _full_model_cfg(kind: str):
    """The det/seg model config: the project's config when it exists, else an inline one."""
    from mmengine.config import Config, ConfigDict

    path = osp.join(ROOT, DET_CONFIG if kind == 'detector' else SEG_CONFIG)
    if osp.exists(path):
        model = Config.fromfile(path).model
    else:
        base = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py' if kind == 'detector' else \
            'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
        model = _inline_base(base)
        model.backbone = ConfigDict(type='UFOViT', arch='small_12_p16')
        if kind == 'detector':
            model.neck.in_channels = [384] * 4
        else:
            model.decode_head.in_channels = [384] * 4
            model.auxiliary_head.in_channels = 384
    model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    model.backbone.pop('init_cfg', None)
    if kind == 'detector':
        # Score threshold 0 keeps the top 100 detections of random weights, so the
        # mask head and mask pasting run at full load (a trained model's worst case).
        model.test_cfg.rcnn.score_thr = 0.0
    else:
        model.test_cfg = dict(mode='whole')
    return model


def _inline_base(base: str):
    from mmengine.config import Config
    lib, rel = base.split('::')
    import importlib
    pkg = osp.dirname(importlib.import_module(lib).__file__)
    return Config.fromfile(osp.join(pkg, '.mim', 'configs', rel)).model


def build_full_model(name: str):
    """Mask R-CNN or UperNet with a UFO-ViT-S12/16 backbone, random weights, eval mode."""
    import ufo_mm  # noqa: F401  registers UFOViT
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    kind = MODELS[name]['kind']
    cfg = _full_model_cfg(kind)
    scope = 'mmdet' if kind == 'detector' else 'mmseg'
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS as REG
    else:
        from mmseg.registry import MODELS as REG
    model = revert_sync_batchnorm(REG.build(cfg))
    model.eval()
    return model


def make_forward(name: str, model, H: int, W: int):
    """A closure running one inference of ``model`` on a (1, 3, H, W) input."""
    import torch
    x = torch.randn(1, 3, H, W)
    kind = MODELS[name]['kind']
    if kind == 'backbone':
        return lambda: model(x)
    if kind == 'detector':
        from mmdet.structures import DetDataSample
        meta = dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
                    batch_input_shape=(H, W), scale_factor=(1., 1.))
        return lambda: model.predict(x, [DetDataSample(metainfo=meta)], rescale=True)
    from mmseg.structures import SegDataSample
    meta = dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W), padding_size=[0] * 4)
    return lambda: model.predict(x, [SegDataSample(metainfo=meta)])


# --------------------------------------------------------------------------- worker side
def current_rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def cpu_jiffies():
    """(busy jiffies of the whole machine, steal included; jiffies of this process)."""
    with open('/proc/stat') as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    with open('/proc/self/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return user + nice + system + irq + softirq + steal, int(fields[11]) + int(fields[12])


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


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


def other_cpu_cores(jiffies_before, t_start: float) -> float:
    """CPU the rest of the machine used since ``cpu_jiffies()`` gave
    ``jiffies_before`` at ``t_start`` (other processes, hypervisor steal), in
    cores: a shared machine's noise, reported and retried on."""
    (busy0, own0), (busy1, own1) = jiffies_before, cpu_jiffies()
    other = ((busy1 - busy0) - (own1 - own0)) / os.sysconf('SC_CLK_TCK') / \
        max(time.perf_counter() - t_start, 1e-6)
    return max(0., other)


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
    base = current_rss_bytes()
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


def _child(spec, conn):
    try:
        conn.send(run_case(spec))
    except Exception as e:  # reported as the case's status, the run goes on
        conn.send(dict(status=f'error: {type(e).__name__}: {str(e)[:200]}'))
    finally:
        conn.close()


# --------------------------------------------------------------------------- parent side
def rss_of(pid: int) -> int:
    try:
        with open(f'/proc/{pid}/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return 0


def run_isolated(ctx, spec: dict, mem_kill_bytes: float, timeout_s: float) -> dict:
    """Run one case in a fresh process forked from a pre-imported server, watching
    its resident set; kill it past ``mem_kill_bytes`` or ``timeout_s``."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, send))
    proc.start()
    send.close()
    t0 = time.time()
    result = None
    while True:
        if recv.poll(0.1):
            try:
                result = recv.recv()
            except EOFError:
                result = None
            break
        if not proc.is_alive():
            break
        if rss_of(proc.pid) > mem_kill_bytes:
            proc.kill()
            result = dict(status=f'killed (RSS > {mem_kill_bytes / 2**30:.0f} GiB)')
            break
        if time.time() - t0 > timeout_s:
            proc.kill()
            result = dict(status=f'killed (> {timeout_s:.0f} s)')
            break
    proc.join()
    if result is None:
        result = dict(status=f'crashed (exit code {proc.exitcode})')
    return result


def measure(ctx, spec: dict, args, mem_kill: float, timeout_s: float = None) -> dict:
    """Run a case; while other processes took more than ``--max-other-cpu`` cores
    during its timed runs, wait and run it again (``--retries`` times), keeping
    the least disturbed result."""
    best = None
    for attempt in range(args.retries + 1):
        if attempt:
            time.sleep(args.retry_wait_s)
        res = run_isolated(ctx, spec, mem_kill, timeout_s or args.case_timeout_s)
        if res['status'] != 'ok':
            return res
        if best is None or res['other_cpu'] < best['other_cpu']:
            best = res
        if res['other_cpu'] <= args.max_other_cpu:
            break
    if attempt:
        best['note'] = f'{attempt + 1} runs (other processes used CPU)'
    if best['other_cpu'] > args.max_other_cpu:
        best['note'] = f'disturbed: other processes used {best["other_cpu"]:.2f} cores'
    return best


def time_interleaved(ctx, rows, args, common, mem_kill):
    """Replace the backbones' times by interleaved ones (:func:`run_group`):
    one process per (precision, input) with every backbone that ran there."""
    groups = {}
    for r in rows:
        if r['kind'] == 'backbone' and r['status'] == 'ok':
            groups.setdefault((r['precision'], r['height'], r['width']), []).append(r)
    for (prec, H, W), members in groups.items():
        spec = dict(common, model='group', models=[r['model'] for r in members],
                    precision=prec, height=H, width=W)
        res = measure(ctx, spec, args, mem_kill, timeout_s=args.case_timeout_s * len(members))
        if res['status'] != 'ok':
            for r in members:
                r['note'] = f'interleaved timing failed ({res["status"]}): time alone'
            print(f'  interleaved {prec} {H}x{W}: {res["status"]}', flush=True)
            continue
        for r in members:
            r.update(res['models'][r['model']], other_cpu=res['other_cpu'])
            if res.get('note'):
                r['note'] = res['note']
        print(f'  interleaved {prec} {H}x{W}: ' + ', '.join(
            f'{r["label"]} {r["time_ms_median"]:.0f} ms' for r in members), flush=True)


def parse_shape(s: str):
    if 'x' in s:
        h, w = s.lower().split('x')
        return int(h), int(w)
    return int(s), int(s)


def plan_cases(args):
    shapes = sorted({parse_shape(s) for s in args.sizes} | {parse_shape(s) for s in args.shapes},
                    key=lambda hw: (hw[0] * hw[1], hw))
    cases = []
    for name in args.models:
        if MODELS[name]['kind'] == 'backbone':
            model_shapes, precisions = shapes, args.precisions
        else:
            model_shapes = sorted({parse_shape(s) for s in args.full_sizes},
                                  key=lambda hw: hw[0] * hw[1])
            precisions = args.full_precisions
        for prec in precisions:
            for H, W in model_shapes:
                cases.append(dict(model=name, height=H, width=W, precision=prec))
    return cases


def estimate(prev: dict, case: dict):
    """Time (s) and resident set (bytes) of ``case`` extrapolated from the same
    model's largest measured case, by the model's growth exponents."""
    if prev is None:
        return None, None
    info = MODELS[case['model']]
    r = case['height'] * case['width'] / (prev['height'] * prev['width'])
    t = prev['time_ms_median'] / 1e3 * r ** info['time_exp']
    mem = prev['base_rss_mb'] * 2**20 + prev['fwd_mem_mb'] * 2**20 * r ** info['mem_exp']
    return t, mem


def fmt(v, spec='.0f'):
    return '-' if v is None or v == '' or (isinstance(v, float) and math.isnan(v)) \
        else format(v, spec)


def add_ratios(rows):
    ref = {(r['precision'], r['height'], r['width']): r for r in rows
           if r['model'] == REFERENCE and r['status'] == 'ok'}
    for r in rows:
        u = ref.get((r['precision'], r['height'], r['width']))
        ok = r['status'] == 'ok' and u is not None and MODELS[r['model']]['kind'] == 'backbone'
        r['time_ratio_vs_ufo_s12'] = r['time_ms_median'] / u['time_ms_median'] if ok else None
        r['mem_ratio_vs_ufo_s12'] = (r['fwd_mem_mb'] / u['fwd_mem_mb']
                                     if ok and u['fwd_mem_mb'] > 0 else None)


def print_table(rows, threads):
    print(f'\nCPU inference, batch 1, torch threads = {threads}; times are medians '
          f'(backbones: of rounds interleaved with the peers at the same size); '
          f'x{MODELS[REFERENCE]["label"]} = peer / UFO-ViT-S12/16 at the same size and precision')
    head = (f'{"model":24s} {"prec":13s} {"input":>9s} {"time ms":>9s} {"xUFO":>6s} '
            f'{"fwd MB":>8s} {"xUFO":>6s} {"peak MB":>8s} {"GFLOPs":>7s} {"other":>5s}  status')
    print(head)
    print('-' * len(head))
    for r in rows:
        print(f'{r["label"]:24s} {r["precision"]:13s} {r["height"]:>4d}x{r["width"]:<4d} '
              f'{fmt(r.get("time_ms_median")):>9s} '
              f'{fmt(r.get("time_ratio_vs_ufo_s12"), ".2f"):>6s} '
              f'{fmt(r.get("fwd_mem_mb")):>8s} {fmt(r.get("mem_ratio_vs_ufo_s12"), ".2f"):>6s} '
              f'{fmt(r.get("peak_rss_mb")):>8s} {fmt(r.get("gflops"), ".1f"):>7s} '
              f'{fmt(r.get("other_cpu"), ".2f"):>5s}  {r["status"]}')


def summary(rows, gemm):
    """The headline numbers: S12 scaling, FLOP rate vs GEMM, who beats whom."""
    lines = []
    get = {(r['model'], r['precision'], r['height'], r['width']): r for r in rows}
    for prec in ('fp32', 'bf16', 'bf16-emulated'):
        a, b = get.get((REFERENCE, prec, 1024, 1024)), get.get((REFERENCE, prec, 2048, 2048))
        if a and b and a['status'] == b['status'] == 'ok':
            lines.append(f'UFO-ViT-S12/16 {prec}: time(2048)/time(1024) = '
                         f'{b["time_ms_median"] / a["time_ms_median"]:.2f} '
                         f'(pixels x4; target <= 4.3)')
    a = get.get((REFERENCE, 'fp32', 1024, 1024))
    if a and a['status'] == 'ok' and a.get('gflops') and gemm.get('fp32'):
        rate = a['gflops'] / (a['time_ms_median'] / 1e3)
        g = gemm['fp32']['gflop_per_s']
        lines.append(f'UFO-ViT-S12/16 fp32 1024x1024: {a["gflops"]:.1f} GFLOP in '
                     f'{a["time_ms_median"]:.0f} ms = {rate:.1f} GFLOP/s; plain fp32 GEMM '
                     f'4096^3: {g:.1f} GFLOP/s -> {100 * rate / g:.0f}% (target >= 60%; '
                     f'GEMM: the faster of torch.mm and oneDNN, start or end of the run: '
                     f'{gemm["fp32"]["note"]})')
    for prec in ('bf16', 'bf16-emulated'):
        if gemm.get(prec):
            lines.append(f'plain {prec} GEMM 4096^3: {gemm[prec]["gflop_per_s"]:.1f} GFLOP/s '
                         f'({gemm[prec]["note"]})')
    for prec in ('fp32', 'bf16', 'bf16-emulated'):
        for H in (1024, 2048):
            u = get.get((REFERENCE, prec, H, H))
            if not u or u['status'] != 'ok':
                continue
            peers = [r for r in rows if r['precision'] == prec and r['height'] == H and
                     r['width'] == H and r['model'] in PEERS]
            faster = [r['label'] for r in peers if r['status'] == 'ok' and
                      r['time_ms_median'] < u['time_ms_median']]
            not_run = [f'{r["label"]} ({r["status"]})' for r in peers if r['status'] != 'ok']
            lines.append(f'{prec} {H}x{H}: UFO-ViT-S12/16 {u["time_ms_median"]:.0f} ms, '
                         f'{u["fwd_mem_mb"]:.0f} MB; faster peers: {", ".join(faster) or "none"}'
                         + (f'; not run: {", ".join(not_run)}' if not_run else ''))
            swin = get.get(('swin_t', prec, H, H))
            if swin and swin['status'] == 'ok':
                lines.append(f'    memory vs Swin-T: forward {u["fwd_mem_mb"]:.0f} vs '
                             f'{swin["fwd_mem_mb"]:.0f} MB, peak RSS {u["peak_rss_mb"]:.0f} vs '
                             f'{swin["peak_rss_mb"]:.0f} MB')
    for r in rows:
        if MODELS[r['model']]['kind'] != 'backbone':
            lines.append(f'{r["label"]} {r["precision"]} {r["height"]}x{r["width"]}: '
                         + (f'{r["time_ms_median"] / 1e3:.1f} s, peak RSS '
                            f'{r["peak_rss_mb"] / 1024:.2f} GiB'
                            if r['status'] == 'ok' else r['status']))
    return lines


def write_csv(rows, path):
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction='ignore')
        w.writeheader()
        for r in rows:
            w.writerow({k: ('' if r.get(k) is None else
                            round(r[k], 3) if isinstance(r.get(k), float) else r[k])
                        for k in CSV_COLUMNS})


def markdown_tables(rows) -> str:
    """Backbone time and memory tables (models x input sizes) and the full models."""
    shapes = sorted({(r['height'], r['width']) for r in rows if r['kind'] == 'backbone'},
                    key=lambda hw: (hw[0] * hw[1], hw))
    get = {(r['model'], r['precision'], r['height'], r['width']): r for r in rows}
    names = list(dict.fromkeys(r['model'] for r in rows if r['kind'] == 'backbone'))
    out = []

    def cell(r, key, ratio_key):
        if r is None:
            return ''
        if r['status'] != 'ok':
            return r['status'].split(' (')[0] + (' (OOM risk)' if 'OOM' in r['status'] else '')
        v = f'{r[key]:.0f}'
        if r.get(ratio_key) is not None and r['model'] != REFERENCE:
            v += f' (x{r[ratio_key]:.2f})'
        return v

    for prec in dict.fromkeys(r['precision'] for r in rows if r['kind'] == 'backbone'):
        for key, ratio_key, what in (('time_ms_median', 'time_ratio_vs_ufo_s12',
                                      'forward time, ms, median of rounds interleaved '
                                      'with the other models (x = model / UFO-ViT-S12/16)'),
                                     ('fwd_mem_mb', 'mem_ratio_vs_ufo_s12',
                                      'forward memory, MB: peak RSS - RSS after build '
                                      '(x = model / UFO-ViT-S12/16)'),
                                     ('peak_rss_mb', None, 'peak RSS of the process, MB')):
            out.append(f'\n**{prec}: {what}**\n')
            out.append('| model | ' + ' | '.join(f'{h}x{w}' for h, w in shapes) + ' |')
            out.append('|---|' + '---:|' * len(shapes))
            for n in names:
                cells = [cell(get.get((n, prec, h, w)), key, ratio_key) for h, w in shapes]
                out.append(f'| {MODELS[n]["label"]} | ' + ' | '.join(cells) + ' |')
    full = [r for r in rows if r['kind'] != 'backbone']
    if full:
        out.append('\n**full models (batch 1, random weights)**\n')
        out.append('| model | precision | input | time, s | peak RSS, GiB | forward memory, GiB |')
        out.append('|---|---|---|---:|---:|---:|')
        for r in full:
            ok = r['status'] == 'ok'
            out.append(f'| {r["label"]} | {r["precision"]} | {r["height"]}x{r["width"]} | '
                       + (f'{r["time_ms_median"] / 1e3:.1f} | {r["peak_rss_mb"] / 1024:.2f} | '
                          f'{r["fwd_mem_mb"] / 1024:.2f} |' if ok else f'{r["status"]} | | |'))
    return '\n'.join(out) + '\n'


def plot(rows, path, threads):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    names = list(dict.fromkeys(r['model'] for r in rows))
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for ax, key, ylabel in ((axes[0], 'time_ms_median', 'forward time (ms)'),
                            (axes[1], 'fwd_mem_mb', 'forward memory: peak RSS - base (MB)')):
        for n in names:
            for prec, style in (('fp32', '-'), ('bf16', '--'), ('bf16-emulated', ':')):
                pts = sorted((r['megapixels'], r[key]) for r in rows
                             if r['model'] == n and r['precision'] == prec and
                             r['status'] == 'ok' and r['height'] == r['width'] and r[key])
                if not pts:
                    continue
                lw = 2.5 if n == REFERENCE else 1.3
                label = f'{MODELS[n]["label"]} {prec}'
                ax.plot(*zip(*pts), style, marker='o', ms=3, lw=lw, color=colors[n],
                        label=label)
                rect = [(r['megapixels'], r[key]) for r in rows
                        if r['model'] == n and r['precision'] == prec and r['status'] == 'ok'
                        and r['height'] != r['width'] and r[key]]
                if rect:
                    ax.plot(*zip(*rect), marker='s', ls='none', mfc='none', color=colors[n])
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('input megapixels (squares: 1024x2048)')
        ax.set_ylabel(ylabel)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].legend(fontsize=6.5, ncol=2)
    fig.suptitle(f'CPU inference, batch 1, {threads} threads (solid fp32, dashed bf16 autocast)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=BACKBONES + FULL_MODELS,
                   choices=list(MODELS), help='cases to run (default: all)')
    p.add_argument('--sizes', nargs='+', default=['512', '1024', '1536', '2048'],
                   help='square input sides, or HxW')
    p.add_argument('--shapes', nargs='*', default=['1024x2048'], help='extra HxW inputs')
    p.add_argument('--full-sizes', nargs='+', default=['1024', '2048'],
                   help='inputs of the full Mask R-CNN / UperNet models')
    p.add_argument('--precisions', nargs='+', default=None, choices=['fp32', 'bf16'],
                   help='default: fp32, and bf16 where this CPU has native bf16')
    p.add_argument('--full-precisions', nargs='+', default=['fp32'], choices=['fp32', 'bf16'])
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=5,
                   help='timed runs (median reported); for the backbones: rounds '
                        'interleaved with the peers')
    p.add_argument('--max-timed-s', type=float, default=25.,
                   help='fewer timed runs (>= 1) when they would take longer than this')
    p.add_argument('--max-forward-s', type=float, default=60.,
                   help='skip a case whose extrapolated forward time exceeds this')
    p.add_argument('--mem-budget-gb', type=float, default=10.,
                   help='skip a case whose extrapolated resident set exceeds this')
    p.add_argument('--mem-kill-gb', type=float, default=16.,
                   help='kill a case whose resident set passes this')
    p.add_argument('--case-timeout-s', type=float, default=600.)
    p.add_argument('--max-other-cpu', type=float, default=0.25,
                   help='rerun a case when other processes used more CPU cores than this '
                        'during its timed runs (shared machines)')
    p.add_argument('--retries', type=int, default=2, help='reruns of a disturbed case')
    p.add_argument('--retry-wait-s', type=float, default=15.)
    p.add_argument('--no-flops', action='store_true', help='do not count FLOPs')
    p.add_argument('--out-dir', default='work_dirs/benchmark')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: sizes 256 and 512 unless given, 1 timed run, '
                        'fp32, backbones only unless --models is given')
    args = p.parse_args(argv)
    if args.quick:
        given = set(a.split('=')[0] for a in (argv if argv is not None else sys.argv[1:]))
        if '--sizes' not in given:
            args.sizes = ['256', '512']
        if '--shapes' not in given:
            args.shapes = []
        if '--precisions' not in given:
            args.precisions = ['fp32']
        if '--models' not in given:
            args.models = BACKBONES
        args.warmup, args.repeats = 1, 1
        args.retries = 0
    args.precisions = resolve_precisions(args.precisions)
    args.full_precisions = resolve_precisions(args.full_precisions)
    return args


def resolve_precisions(requested):
    """The precisions to run: the default is fp32, plus bf16 where it is native;
    bf16 asked for on a CPU without native bf16 becomes 'bf16-emulated'."""
    from ufo_mm import cpu_features
    native = cpu_features.bf16_native()
    if requested is None:
        return ['fp32', 'bf16'] if native else ['fp32']
    return [p if p != 'bf16' or native else 'bf16-emulated' for p in requested]


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    ctx = mp.get_context('forkserver')
    # Each case runs in a process forked from a server that has imported these
    # once: fresh memory accounting per case without paying the imports each time.
    ctx.set_forkserver_preload(['torch', 'ufo_mm', 'mmdet.models', 'mmseg.models'])
    import torch
    from ufo_mm import cpu_features
    print(f'torch {torch.__version__}, threads per case: {args.threads} '
          f'(torch.set_num_threads), CPU capability: '
          f'{torch.backends.cpu.get_cpu_capability()}, cases run one at a time', flush=True)
    print(f'{cpu_features.bf16_status()}; precisions: {", ".join(args.precisions)}'
          + ('' if cpu_features.bf16_native() or 'bf16-emulated' in args.precisions else
             ' (bf16 not run: pass --precisions fp32 bf16 to measure it emulated)'), flush=True)
    mem_kill = args.mem_kill_gb * 2**30
    common = dict(threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                  max_timed_s=args.max_timed_s)
    gemm = {}

    def measure_gemm(when):
        """The reference GEMM, at the start and at the end of the run: the
        faster measurement is kept (a shared machine has slow phases)."""
        for prec in sorted(set(args.precisions) | {'fp32'}):
            res = run_isolated(ctx, dict(common, model='gemm', precision=prec), mem_kill,
                               args.case_timeout_s)
            if res['status'] == 'ok':
                print(f'plain {prec} GEMM 4096^3 ({when}): {res["gflop_per_s"]:.1f} GFLOP/s '
                      f'({res["note"]})', flush=True)
                if prec not in gemm or res['gflop_per_s'] > gemm[prec]['gflop_per_s']:
                    gemm[prec] = res

    measure_gemm('start of the run')
    rows, last = [], {}
    for case in plan_cases(args):
        info = MODELS[case['model']]
        key = (case['model'], case['precision'])
        row = dict(case, label=info['label'], kind=info['kind'], threads=args.threads,
                   megapixels=case['height'] * case['width'] / 1e6)
        t_est, mem_est = estimate(last.get(key), case)
        if mem_est is not None and mem_est > args.mem_budget_gb * 2**30:
            row['status'] = 'skipped (OOM risk)'
            row['note'] = f'estimated {mem_est / 2**30:.1f} GiB > {args.mem_budget_gb:g} GiB'
        elif t_est is not None and t_est > args.max_forward_s:
            row['status'] = 'skipped (time)'
            row['note'] = f'estimated {t_est:.0f} s per forward > {args.max_forward_s:g} s'
        else:
            spec = dict(common, **case)
            backbone = info['kind'] == 'backbone'
            spec['flops'] = (not args.no_flops and backbone and
                             case['height'] * case['width'] <= 1024 * 1024)
            if backbone:  # timed again below, interleaved with its peers
                spec['repeats'] = 1
            row.update(measure(ctx, spec, args, mem_kill))
            if row['status'] == 'ok':
                last[key] = row
                row['time_ms_alone'] = row['time_ms_median']
                row['timing'] = 'alone'
        rows.append(row)
        print(f'  {row["label"]:24s} {row["precision"]} {row["height"]}x{row["width"]}: '
              + (f'{row["time_ms_median"]:.0f} ms alone, fwd mem {row["fwd_mem_mb"]:.0f} MB, '
                 f'peak {row["peak_rss_mb"]:.0f} MB' if row['status'] == 'ok'
                 else row['status'] + (f' ({row["note"]})' if row.get('note') else '')),
              flush=True)
    time_interleaved(ctx, rows, args, common, mem_kill)
    measure_gemm('end of the run')
    add_ratios(rows)
    print_table(rows, args.threads)
    lines = summary(rows, gemm)
    print('\n' + '\n'.join(lines))
    csv_path = osp.join(args.out_dir, 'benchmark.csv')
    png_path = osp.join(args.out_dir, 'benchmark.png')
    write_csv(rows, csv_path)
    plot(rows, png_path, args.threads)
    with open(osp.join(args.out_dir, 'benchmark_summary.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(osp.join(args.out_dir, 'benchmark_tables.md'), 'w') as f:
        f.write(markdown_tables(rows))
    print(f'\nwrote {csv_path}, {png_path}, benchmark_summary.txt and benchmark_tables.md')
    return rows


if __name__ == '__main__':
    main()
