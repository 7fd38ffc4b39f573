"""The GPU benchmark of record: UFO-ViT-S12/16 against Swin-T and XCiT-S12/16
on one CUDA device (:func:`run_gpu_benchmark`; ``tools/benchmark.py --device cuda``).

Every case is one backbone, one mode, one precision, one square input, eager
or ``torch.compile(model)`` (default mode), batch 1, in this process, one
case at a time:

* the model is built on the device with random weights (no download), the
  input is ``torch.randn(1, 3, H, W)`` there;
* ``forward``: eval mode under ``torch.no_grad()``. ``train``: train mode,
  forward, loss = the sum of the outputs' means, backward,
  ``torch.optim.AdamW`` step, ``zero_grad``;
* precision (:func:`tf32_flags`, :func:`autocast`): ``fp32`` with TF32 off
  for cuBLAS and cuDNN (``torch.backends.cuda.matmul.allow_tf32``,
  ``torch.backends.cudnn.allow_tf32``), ``tf32`` with both on, ``bf16`` and
  ``fp16`` under ``torch.autocast('cuda', dtype=...)`` around the forward
  (TF32 off for what stays fp32; no GradScaler). Each case sets them and
  restores them;
* the first call (with ``torch.compile``: the compile and one run,
  ``compile_s``), then ``warmup`` calls, untimed; then the allocator's peak
  is reset and ``repeats`` calls (fewer, at least 3, past ``max_timed_s``)
  are timed with CUDA events: ``time_ms_median``, ``time_ms_min``;
  ``peak_mem_gb``: ``torch.cuda.max_memory_allocated`` over the timed calls,
  in GiB (weights, optimizer state, input and activations);
* an out-of-memory is the case's status, ``oom``, and the same series'
  (model, mode, precision, eager/compiled) larger inputs are ``skipped``; any
  other error (a failing compile: ``compile error: ...``) is its status; the
  run goes on. After each case everything is freed (``del``, ``gc.collect``,
  ``torch.cuda.empty_cache``, ``torch._dynamo.reset``).

Ratios (:func:`add_ratios`), as the CPU benchmark's: peer / UFO-ViT-S12/16
time and peak memory at the same (mode, compiled, precision, input).

Outputs in ``out_dir`` (:func:`write_outputs`): ``gpu_benchmark.csv`` (one row
per case, :data:`CSV_COLUMNS`; rewritten after every case, so a run cut short
keeps what it measured), ``gpu_benchmark_tables.md``, ``gpu_benchmark.png``
(time and memory against the side, log-log) and ``gpu_benchmark_log.txt``
(the progress lines, also printed).

The same code runs on the CPU as a dry run of the plumbing (``--device cpu
--gpu-plan``): wall-clock timers in place of CUDA events, no memory counter.
"""
import argparse
import contextlib
import csv
import gc
import math
import os
import os.path as osp
import sys
import time
import warnings

import torch
import torch.nn as nn

from ..devices import DeviceError, resolve_device
from .harness import error_status
from .measure import time_stats

REFERENCE = 'ufo_s12'
PRECISIONS = ('fp32', 'tf32', 'bf16', 'fp16')
AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
MODES = ('forward', 'train')
SIZES = (512, 1024, 2048, 4096)
CSV_COLUMNS = ['model', 'label', 'mode', 'compiled', 'precision', 'height', 'width', 'batch',
               'time_ms_median', 'time_ms_min', 'repeats', 'peak_mem_gb', 'compile_s', 'status',
               'time_ratio_vs_ufo_s12', 'mem_ratio_vs_ufo_s12', 'torch_version', 'gpu_name',
               'source', 'note']


class ForwardFeatures(nn.Module):
    """A timm classifier as a dense backbone: ``forward`` is its
    ``forward_features``. XCiT: (B, 3, H, W) -> (B, 1 + H/16 * W/16, C) tokens
    after the blocks, the class-attention blocks and the norm."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def build_ufo_s12() -> nn.Module:
    from ufo_mm.models import UFOViT
    # No input check: its reduction and host sync per forward (a graph break under
    # torch.compile) belong to no architecture, and the peers have none.
    return UFOViT(arch='small_12_p16', check_finite=False)


def build_swin_t() -> nn.Module:
    """Swin-T as the CPU benchmark's (``zoo.build_backbone('swin_t')``), from
    mmseg, or from mmdet (the same module) where mmseg is missing."""
    try:
        from mmseg.models.backbones import SwinTransformer
    except ImportError:
        from mmdet.models.backbones import SwinTransformer
    return SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                           window_size=7, out_indices=(0, 1, 2, 3))


def build_xcit_s12() -> nn.Module:
    """timm's XCiT-S12/16. Its patch embedding checks no size and its Fourier
    position encoding is computed from the token grid, so the model made for
    224x224 runs ``forward_features`` on any input: no ``img_size`` passed."""
    import timm
    return ForwardFeatures(timm.create_model('xcit_small_12_p16_224', pretrained=False,
                                             num_classes=0))


# name -> its label, builder (random weights) and compile time relative to
# UFO-ViT's (for the estimate: inductor on a 2-core CPU, 64x64 fp32, forward and
# training step: UFO-ViT 38 and 74 s, Swin-T 125 and 165 s, XCiT 28 s forward);
# the reference first.
BACKBONES = {
    'ufo_s12': dict(label='UFO-ViT-S12/16', build=build_ufo_s12, compile_cost=1.),
    'swin_t': dict(label='Swin-T', build=build_swin_t, compile_cost=2.5),
    'xcit_s12': dict(label='XCiT-S12/16', build=build_xcit_s12, compile_cost=.8),
}

# Guesses for one H200, for the printed estimate only (no GPU run yet; replace them
# with the first run's): ms per megapixel of an eager forward by precision, a training
# step as TRAIN_COST forwards, at least FLOOR_MS per call (kernel launches), and the
# first call of torch.compile of UFO-ViT (times the model's compile_cost).
GUESS_MS_PER_MPX = {'fp32': 6., 'tf32': 2.5, 'bf16': 1.5, 'fp16': 1.5}
GUESS_TRAIN_COST = 3.
GUESS_FLOOR_MS = {'forward': 4., 'train': 15.}
GUESS_BUILD_S = .5
GUESS_COMPILE_S = {'forward': 25., 'train': 50.}


DeviceUnavailable = DeviceError  # the one device check of the tools (ufo_mm.devices)


def check_device(name: str, dry_run: bool = False) -> torch.device:
    """``name`` ('cuda', 'cuda:N'; 'cpu' with ``dry_run``) as a device that can
    run the benchmark, or :class:`ufo_mm.devices.DeviceError` saying why not
    in one line."""
    device = resolve_device(name)
    if device.type == 'cpu' and not dry_run:
        raise DeviceError(f'--device {name}: the GPU benchmark needs a CUDA device '
                          '(--gpu-plan runs its plumbing on the CPU)')
    return device


class CudaBackend:
    """Time by CUDA events, memory by the caching allocator's peak, on ``device``."""

    oom_errors = (torch.cuda.OutOfMemoryError, )

    def __init__(self, device: torch.device):
        self.device = device
        self.name = torch.cuda.get_device_name(device)

    def sync(self):
        torch.cuda.synchronize(self.device)

    def reset_peak(self):
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float:
        self.sync()
        return torch.cuda.max_memory_allocated(self.device) / 2**30

    def time(self, fn, n: int) -> list:
        """Call ``fn`` ``n`` times back to back; the GPU time (s) of each call,
        from an event recorded before it to one recorded after it."""
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(n)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        self.sync()
        return [start.elapsed_time(end) / 1e3 for start, end in events]

    def free(self):
        gc.collect()
        torch.cuda.empty_cache()


class CpuBackend(CudaBackend):
    """The dry run's stand-in: wall-clock time, no memory counter."""

    def __init__(self, device: torch.device = torch.device('cpu')):
        self.device = device
        self.name = f'cpu (dry run, threads: {torch.get_num_threads()})'

    def sync(self):
        pass

    def reset_peak(self):
        pass

    def peak_gb(self):
        return None

    def time(self, fn, n: int) -> list:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times

    def free(self):
        gc.collect()


@contextlib.contextmanager
def tf32_flags(precision: str):
    """TF32 for cuBLAS and cuDNN on for 'tf32', off for the others; restored after."""
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision {precision!r}; valid: {list(PRECISIONS)}')
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    with warnings.catch_warnings():  # torch >= 2.9 prefers fp32_precision; same effect
        warnings.simplefilter('ignore')
        matmul.allow_tf32 = cudnn.allow_tf32 = precision == 'tf32'
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            matmul.allow_tf32, cudnn.allow_tf32 = saved


def autocast(precision: str, device_type: str):
    """``torch.autocast`` to bf16 or fp16 for those precisions, a no-op for fp32 and tf32."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out, )


def make_step(model: nn.Module, x: torch.Tensor, mode: str, precision: str, compiled: bool):
    """The closure one call of a case runs: an inference (eval mode, no
    autograd) or a training step (train mode; forward, loss = the sum of the
    outputs' means, backward, AdamW step, zero_grad), the forward under
    :func:`autocast`, through ``torch.compile(model)`` with ``compiled``."""
    run = torch.compile(model) if compiled else model
    device_type = x.device.type
    if mode == 'forward':
        model.eval()

        def step():
            with torch.no_grad(), autocast(precision, device_type):
                run(x)
        return step
    if mode != 'train':
        raise ValueError(f'unknown mode {mode!r}; valid: {list(MODES)}')
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(precision, device_type):
            outs = as_tuple(run(x))
        sum(o.float().mean() for o in outs).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def is_oom(e: Exception, backend) -> bool:
    """An out-of-memory, also when a compiler wrapped it in its own error."""
    return isinstance(e, backend.oom_errors) or 'out of memory' in str(e).lower()


def source(model: nn.Module) -> str:
    """The measured module's class, with its module
    ('mmseg.models.backbones.swin.SwinTransformer')."""
    inner = model.model if isinstance(model, ForwardFeatures) else model
    return f'{type(inner).__module__}.{type(inner).__name__}'


def timed_calls(spec: dict, per_call_s: float) -> int:
    """``spec['repeats']``, fewer (at least 3) when calls of ``per_call_s`` would
    take more than ``spec['max_timed_s']``."""
    n = spec['repeats']
    if spec.get('max_timed_s') and per_call_s > 0:
        n = min(n, max(3, int(spec['max_timed_s'] / per_call_s)))
    return max(1, n)


def measure_case(case: dict, backend, spec: dict, builders: dict = None) -> dict:
    """Build, warm up, time and read the peak memory of one ``case`` (model,
    mode, precision, height, width, batch, compiled) with ``backend``;
    ``spec``: warmup, repeats, max_timed_s. Returns the measurements, or the
    status of a failure (``oom``, ``compile error: ...``, ``error: ...``),
    everything the case allocated freed."""
    builders = builders or {k: v['build'] for k, v in BACKBONES.items()}
    found = {}
    compile_call = [False]

    def measure():
        device = backend.device
        with torch.device(device):
            model = builders[case['model']]()
        model.to(device)
        found['source'] = source(model)
        x = torch.randn(case['batch'], 3, case['height'], case['width'], device=device)
        with tf32_flags(case['precision']):
            step = make_step(model, x, case['mode'], case['precision'], case['compiled'])
            backend.sync()
            compile_call[0] = case['compiled']
            t0 = time.perf_counter()
            step()  # with compile: the compile
            backend.sync()
            first_s = time.perf_counter() - t0
            compile_call[0] = False
            warmup = max(1, spec['warmup'])
            t0 = time.perf_counter()
            for _ in range(warmup):
                step()
            backend.sync()
            per_call_s = (time.perf_counter() - t0) / warmup
            backend.reset_peak()
            times = backend.time(step, timed_calls(spec, per_call_s))
            peak = backend.peak_gb()
        return dict(status='ok', **time_stats(times), peak_mem_gb=peak,
                    compile_s=first_s if case['compiled'] else None)

    try:
        result = measure()
    except Exception as e:  # the case's status; the run goes on
        if is_oom(e, backend):
            result = dict(status='oom', note=str(e).split('\n')[0][:200])
        else:
            status = ('compile ' if compile_call[0] else '') + error_status(e)
            result = dict(status=' '.join(status.split()))  # one line
    if case['compiled']:
        torch._dynamo.reset()
    backend.free()
    return dict(found, **result)


def parse_args(argv=None):
    """The GPU benchmark's options (``tools/benchmark.py --device cuda ...``)."""
    p = argparse.ArgumentParser(
        prog='tools/benchmark.py --device cuda',
        description='GPU benchmark: UFO-ViT-S12/16 against Swin-T and XCiT-S12/16 '
                    '(ufo_mm.benchmark.gpu)')
    p.add_argument('--device', default=None,
                   help="'cuda' (default) or 'cuda:N'; 'cpu' with --gpu-plan")
    p.add_argument('--gpu-plan', action='store_true', help=argparse.SUPPRESS)  # CPU dry run
    p.add_argument('--models', nargs='+', default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument('--sizes', nargs='+', type=int, default=list(SIZES),
                   help='square input sides')
    p.add_argument('--train-sizes', nargs='+', type=int, default=None,
                   help='sides of the training steps (default: --sizes)')
    p.add_argument('--precisions', nargs='+', default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
    p.add_argument('--compile-precisions', nargs='+', default=['bf16'], choices=PRECISIONS,
                   help='torch.compile cases: these of --precisions')
    p.add_argument('--compile-sizes', nargs='+', type=int, default=[2048],
                   help='torch.compile cases: these of the eager sizes')
    p.add_argument('--compile-modes', nargs='+', default=['forward'], choices=MODES,
                   help='torch.compile cases: these of --modes (default forward: each '
                        'compiled training step adds about a minute)')
    p.add_argument('--compile-models', nargs='+', default=list(BACKBONES),
                   choices=list(BACKBONES))
    p.add_argument('--no-compile', action='store_true', help='eager cases only')
    p.add_argument('--warmup', type=int, default=3, help='untimed calls after the first')
    p.add_argument('--repeats', type=int, default=10, help='timed calls (median reported)')
    p.add_argument('--max-timed-s', type=float, default=3.,
                   help='fewer timed calls (at least 3) when they would take longer')
    p.add_argument('--time-budget-s', type=float, default=300.,
                   help='cases not started by then are skipped (0: no limit)')
    p.add_argument('--out-dir', default='work_dirs/gpu_benchmark')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: sides 256 and 512, one precision (bf16; fp32 in the '
                        'CPU dry run), 1 warm-up and 3 timed calls, UFO-ViT compiled at 256 '
                        '(forward and training step)')
    args = p.parse_args(argv)
    given = {a.split('=')[0] for a in (argv if argv is not None else sys.argv[1:])}
    if args.device is None:
        args.device = 'cpu' if args.gpu_plan else 'cuda'
    if args.quick:
        if '--sizes' not in given:
            args.sizes = [256, 512]
        if '--precisions' not in given:
            args.precisions = ['fp32' if args.device == 'cpu' else 'bf16']
        if '--compile-precisions' not in given:
            args.compile_precisions = args.precisions[:1]
        if '--compile-sizes' not in given:
            args.compile_sizes = [min(args.sizes)]
        if '--compile-modes' not in given:
            args.compile_modes = list(MODES)
        if '--compile-models' not in given:
            args.compile_models = [REFERENCE]
        if '--warmup' not in given:
            args.warmup = 1
        if '--repeats' not in given:
            args.repeats = 3
    if args.train_sizes is None:
        args.train_sizes = list(args.sizes)
    return args


def plan_cases(args) -> list:
    """The cases, eager first, then compiled (the twins of the eager cases of
    ``--compile-modes``, ``--compile-precisions``, ``--compile-sizes`` and
    ``--compile-models``); within each: mode,
    precision, side (smallest first), model (UFO-ViT-S12/16 first)."""
    models = sorted(dict.fromkeys(args.models), key=lambda m: m != REFERENCE)
    cases = []
    for compiled in (False, ) if args.no_compile else (False, True):
        for mode in dict.fromkeys(args.modes):
            if compiled and mode not in args.compile_modes:
                continue
            sizes = args.sizes if mode == 'forward' else args.train_sizes
            precisions = args.precisions
            if compiled:
                sizes = [s for s in sizes if s in args.compile_sizes]
                precisions = [p for p in precisions if p in args.compile_precisions]
            for prec in dict.fromkeys(precisions):
                for side in sorted(set(sizes)):
                    for name in models:
                        if compiled and name not in args.compile_models:
                            continue
                        cases.append(dict(model=name, mode=mode, compiled=compiled,
                                          precision=prec, height=side, width=side, batch=1))
    return cases


def estimate_s(case: dict, args) -> float:
    """The guessed duration of ``case`` on an H200 (:data:`GUESS_MS_PER_MPX` ...)."""
    mpx = case['height'] * case['width'] * case['batch'] / 1e6
    call_ms = GUESS_MS_PER_MPX[case['precision']] * mpx
    if case['mode'] == 'train':
        call_ms *= GUESS_TRAIN_COST
    call_s = max(call_ms, GUESS_FLOOR_MS[case['mode']]) / 1e3
    calls = 1 + max(1, args.warmup) + timed_calls(vars(args), call_s)
    return (GUESS_BUILD_S + calls * call_s
            + (GUESS_COMPILE_S[case['mode']] * BACKBONES[case['model']]['compile_cost']
               if case['compiled'] else 0.))


def describe_plan(cases, args) -> list:
    """Lines on the plan: how many cases of each kind, and the guessed duration."""
    lines, total = [], 0.
    groups = {}
    for c in cases:
        key = (c['compiled'], c['mode'])
        groups.setdefault(key, []).append(c)
        total += estimate_s(c, args)
    for (compiled, mode), cs in groups.items():
        lines.append(f'  {"compiled" if compiled else "eager"} {mode}: {len(cs)} cases: '
                     f'{", ".join(dict.fromkeys(c["model"] for c in cs))} x '
                     f'{"/".join(dict.fromkeys(c["precision"] for c in cs))} x sides '
                     f'{"/".join(str(s) for s in sorted({c["height"] for c in cs}))}, '
                     f'about {sum(estimate_s(c, args) for c in cs) / 60:.1f} min')
    budget = f'; time budget {args.time_budget_s:.0f} s' if args.time_budget_s else ''
    return [f'plan: {len(cases)} cases, batch 1, warm-up {args.warmup}, timed calls '
            f'{args.repeats} (max {args.max_timed_s:g} s), estimated {total / 60:.1f} min on '
            f'an H200 (a guess: no H200 run yet){budget}'] + lines


def ratio_key(r: dict) -> tuple:
    """What a row is compared on with UFO-ViT-S12/16's."""
    return (r['mode'], bool(r['compiled']), r['precision'], r['height'], r['width'],
            r.get('batch', 1))


def add_ratios(rows, reference: str = REFERENCE):
    """``time_ratio_vs_ufo_s12`` and ``mem_ratio_vs_ufo_s12`` of every measured
    row (in place): its median time and peak memory over those of the
    ``reference`` row at the same :func:`ratio_key` (1.0 for the reference
    itself); None where either was not measured."""
    ref = {ratio_key(r): r for r in rows if r['model'] == reference and r['status'] == 'ok'}
    for r in rows:
        u = ref.get(ratio_key(r)) if r['status'] == 'ok' else None
        r['time_ratio_vs_ufo_s12'] = (r['time_ms_median'] / u['time_ms_median']
                                      if u and u['time_ms_median'] else None)
        r['mem_ratio_vs_ufo_s12'] = (r['peak_mem_gb'] / u['peak_mem_gb']
                                     if u and u.get('peak_mem_gb') and
                                     r.get('peak_mem_gb') is not None else None)
    return rows


def fmt_ms(v) -> str:
    """A time in ms with 3 significant figures where it matters, '-' when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '-'
    return f'{v:.2f}' if v < 10 else f'{v:.1f}' if v < 100 else f'{v:.0f}'


def describe_row(r: dict) -> str:
    """One progress line's result part."""
    if r['status'] != 'ok':
        return r['status'] + (f' ({r["note"]})' if r.get('note') else '')
    out = f'{fmt_ms(r["time_ms_median"])} ms (min {fmt_ms(r["time_ms_min"])}, ' \
          f'{r["repeats"]} calls)'
    if r.get('peak_mem_gb') is not None:
        out += f', peak {r["peak_mem_gb"]:.2f} GiB'
    if r.get('compile_s') is not None:
        out += f', first call (compile) {r["compile_s"]:.1f} s'
    if r['model'] != REFERENCE and r.get('time_ratio_vs_ufo_s12') is not None:
        out += f'; x{r["time_ratio_vs_ufo_s12"]:.2f} time'
        if r.get('mem_ratio_vs_ufo_s12') is not None:
            out += f', x{r["mem_ratio_vs_ufo_s12"]:.2f} memory'
        out += f' vs {BACKBONES[REFERENCE]["label"]}'
    return out


def case_row(case: dict, environment: dict) -> dict:
    """The row of ``case`` before it is measured: every column, None where unknown."""
    label = BACKBONES[case['model']]['label'] + (' (compiled)' if case['compiled'] else '')
    return dict(dict.fromkeys(CSV_COLUMNS), **case, label=label, status='planned',
                **environment)


class Log:
    """Progress lines: printed (flushed) and appended to a file when given one."""

    def __init__(self, path: str = None):
        self.path = path
        if path:
            open(path, 'w').close()

    def __call__(self, line: str = ''):
        print(line, flush=True)
        if self.path:
            with open(self.path, 'a') as f:
                f.write(line + '\n')


def run_gpu_benchmark(args, builders: dict = None, log=None) -> list:
    """Run the benchmark of ``args`` (:func:`parse_args`, or a list of its
    command-line strings) and return its rows (one dict per case,
    :data:`CSV_COLUMNS`), the files written to ``args.out_dir`` when set.
    ``builders`` (name -> a function building the module) replaces the
    models' builders (tests). Raises :class:`DeviceUnavailable` at once
    when the device cannot run it."""
    if isinstance(args, (list, tuple)):
        args = parse_args(list(args))
    device = check_device(args.device, dry_run=args.gpu_plan)
    backend = CudaBackend(device) if device.type == 'cuda' else CpuBackend(device)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    log = log or Log(osp.join(args.out_dir, 'gpu_benchmark_log.txt') if args.out_dir else None)
    environment = dict(torch_version=torch.__version__, gpu_name=backend.name)
    log(f'GPU benchmark on {backend.name} ({device}), torch {torch.__version__}, '
        f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, '
        f'cudnn.benchmark {torch.backends.cudnn.benchmark}'
        + (', DRY RUN on the CPU: wall-clock timers, no memory counter'
           if device.type == 'cpu' else ', timed with CUDA events'))
    cases = plan_cases(args)
    for line in describe_plan(cases, args):
        log(line)
    spec = dict(warmup=args.warmup, repeats=args.repeats, max_timed_s=args.max_timed_s)
    rows, oom_at, done = [], {}, {}
    t_start = time.perf_counter()
    context = torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()
    with context:
        for i, case in enumerate(cases):
            row = case_row(case, environment)
            series = (case['model'], case['mode'], case['precision'], case['compiled'])
            twin = done.get(ratio_key(dict(row, compiled=False)) + (case['model'], ))
            elapsed = time.perf_counter() - t_start
            if args.time_budget_s and elapsed > args.time_budget_s:
                row['status'] = 'skipped (time budget)'
            elif series in oom_at:
                row['status'] = f'skipped (oom at {oom_at[series]}x{oom_at[series]})'
            elif case['compiled'] and twin is not None and twin['status'] != 'ok':
                row['status'] = (twin['status'] if twin['status'].startswith('skipped') else
                                 f'skipped (eager {twin["status"].split(":")[0]})')
            else:
                row.update(measure_case(case, backend, spec, builders))
            if row['status'] == 'oom':
                oom_at[series] = case['height']
            done[ratio_key(row) + (case['model'], )] = row
            rows.append(row)
            add_ratios(rows)
            log(f'[{i + 1}/{len(cases)} {elapsed:4.0f} s] {case["mode"]:7s} '
                f'{"compiled" if case["compiled"] else "eager":8s} {case["precision"]:4s} '
                f'{case["height"]}x{case["width"]} {BACKBONES[case["model"]]["label"]}: '
                f'{describe_row(row)}')
            if args.out_dir:
                write_csv(rows, osp.join(args.out_dir, 'gpu_benchmark.csv'))
    log(f'{len(rows)} cases in {time.perf_counter() - t_start:.0f} s')
    if args.out_dir:
        log(markdown_tables(rows))
        paths = write_outputs(rows, args.out_dir)
        log('wrote ' + ', '.join(paths))
    return rows


def write_csv(rows, path: str):
    """One row per case, :data:`CSV_COLUMNS`, floats to 4 significant digits."""
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction='ignore')
        w.writeheader()
        for r in rows:
            w.writerow({k: ('' if r.get(k) is None else
                            float(f'{r[k]:.4g}') if isinstance(r.get(k), float) else r[k])
                        for k in CSV_COLUMNS})


def table_cell(r: dict, key: str, ratio_key_: str, spec=fmt_ms) -> str:
    """The row's value (and its ratio to UFO-ViT-S12/16), its status when not measured."""
    if r is None:
        return ''
    if r['status'] != 'ok':
        return r['status'].split(':')[0]  # 'compile error: ...' -> 'compile error'
    if r.get(key) is None:
        return '-'
    v = spec(r[key])
    if ratio_key_ and r['model'] != REFERENCE and r.get(ratio_key_) is not None:
        v += f' (x{r[ratio_key_]:.2f})'
    return v


def markdown_tables(rows) -> str:
    """Per mode and eager/compiled: time and peak memory, models x precisions
    by sides, with peer / UFO-ViT-S12/16 ratios; the compiled cases' first calls."""
    if not rows:
        return ''
    r0 = rows[0]
    timer = 'wall clock' if r0['gpu_name'].startswith('cpu') else 'CUDA events'
    out = [f'GPU benchmark: {r0["gpu_name"]}, torch {r0["torch_version"]}, batch 1. Time: '
           f'median of the timed calls ({timer}), ms; memory: peak of '
           f'torch.cuda.max_memory_allocated over them, GiB (weights, optimizer state, input, '
           f'activations). (xR) = this model / {BACKBONES[REFERENCE]["label"]} at the same '
           f'mode, compile, precision and input.']
    get = {ratio_key(r) + (r['model'], ): r for r in rows}
    tables = [('time_ms_median', 'time_ratio_vs_ufo_s12', 'time, ms', fmt_ms),
              ('peak_mem_gb', 'mem_ratio_vs_ufo_s12', 'peak memory, GiB', lambda v: f'{v:.2f}')]
    what = {'forward': 'forward (eval, no_grad)',
            'train': 'training step (forward, backward, AdamW step)'}
    for mode in dict.fromkeys(r['mode'] for r in rows):
        for compiled in dict.fromkeys(bool(r['compiled']) for r in rows if r['mode'] == mode):
            sel = [r for r in rows if r['mode'] == mode and bool(r['compiled']) == compiled]
            sides = sorted({r['height'] for r in sel})
            lines = list(dict.fromkeys((r['precision'], r['model']) for r in sel))
            kinds = tables + ([('compile_s', None, 'first call (the compile and one run), s',
                                lambda v: f'{v:.1f}')] if compiled else [])
            for key, ratio_col, name, spec in kinds:
                out.append(f'\n**{what[mode]}, {"torch.compile" if compiled else "eager"}: '
                           f'{name}**\n')
                out.append('| model | precision | ' + ' | '.join(f'{s}x{s}' for s in sides)
                           + ' |')
                out.append('|---|---|' + '---:|' * len(sides))
                for prec, model in lines:
                    cells = [table_cell(get.get((mode, compiled, prec, s, s, 1, model)), key,
                                        ratio_col, spec) for s in sides]
                    out.append(f'| {BACKBONES[model]["label"]} | {prec} | '
                               + ' | '.join(cells) + ' |')
    return '\n'.join(out) + '\n'


def plot(rows, path: str):
    """Eager time and peak memory against the input side, log-log: forward and
    training step, one line per model and precision."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator
    eager = [r for r in rows if not r['compiled'] and r['status'] == 'ok']
    modes = list(dict.fromkeys(r['mode'] for r in rows)) or ['forward']
    fig, axes = plt.subplots(len(modes), 2, figsize=(13, 4.8 * len(modes)), squeeze=False)
    colors = {m: plt.cm.tab10(i) for i, m in enumerate(BACKBONES)}
    styles = dict(zip(PRECISIONS, ('-', '--', '-.', ':')))
    for row_axes, mode in zip(axes, modes):
        for ax, key, ylabel in ((row_axes[0], 'time_ms_median', 'time, ms (median)'),
                                (row_axes[1], 'peak_mem_gb', 'peak memory, GiB')):
            for model in BACKBONES:
                for prec in PRECISIONS:
                    pts = sorted((r['height'], r[key]) for r in eager
                                 if r['model'] == model and r['precision'] == prec and
                                 r['mode'] == mode and r.get(key))
                    if pts:
                        ax.plot(*zip(*pts), styles[prec], marker='o', ms=3, color=colors[model],
                                lw=2.5 if model == REFERENCE else 1.3,
                                label=f'{BACKBONES[model]["label"]} {prec}')
            if ax.lines:
                ax.set_xscale('log', base=2)
                ax.set_yscale('log')
                sides = sorted({x for line in ax.lines for x in line.get_xdata()})
                ax.set_xticks(sides, [str(int(x)) for x in sides])
                ax.xaxis.set_minor_locator(NullLocator())
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, 'not measured', ha='center', transform=ax.transAxes)
            ax.set_xlabel('input side (square, batch 1)')
            ax.set_ylabel(ylabel)
            ax.set_title(f'{mode}, eager')
            ax.grid(True, which='both', alpha=0.3)
    name = rows[0]['gpu_name'] if rows else ''
    fig.suptitle(f'UFO-ViT-S12/16 against Swin-T and XCiT-S12/16 on {name}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows, out_dir: str) -> list:
    """gpu_benchmark.csv, gpu_benchmark_tables.md and gpu_benchmark.png in ``out_dir``."""
    paths = [osp.join(out_dir, f'gpu_benchmark{ext}') for ext in ('.csv', '_tables.md', '.png')]
    write_csv(rows, paths[0])
    with open(paths[1], 'w') as f:
        f.write(markdown_tables(rows))
    plot(rows, paths[2])
    return paths

