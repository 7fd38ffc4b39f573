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

``--compile`` adds, for every backbone case, ``torch.compile(model)`` (default
inductor backend; a C++ compiler is needed) timed in the same interleaved
rounds: its first call (a cold inductor cache: the compile and one run) is
``compile_s``, apart from the median of the steady calls; its rows are
labelled ``(compiled)`` (CSV ``compiled``), memory not measured. A failing
compile is the row's status.

``--train`` adds a training-step table: each of ``--train-models`` (default
UFO-ViT-S12/16 and Swin-T) in train mode, forward + backward of the sum of
the four outputs' means under ``torch.enable_grad()``, gradients set to None
(no optimizer step), fp32, without and with ``with_cp=True``, at each of
``--train-sizes`` (SIDE[xW][:BATCH]; default 512x512 batch 2 and 1024x1024
batch 1): alone for the step memory (``fwd_mem_mb``), then interleaved with
the other cases at that input (``mode=train`` rows; with ``--compile`` the
compiled step too). ``--train-only`` skips the inference cases.

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

The measuring logic is ``ufo_mm.benchmark`` (zoo, measure, harness, runner,
report); this file is its command line.

``--device cuda`` (or ``cuda:N``) runs the GPU benchmark instead,
``ufo_mm.benchmark.gpu`` (its docstring says what it measures; its options:
``--device cuda --help``): UFO-ViT-S12/16 against Swin-T and XCiT-S12/16,
forward and training step, fp32/tf32/bf16/fp16, eager and ``torch.compile``,
CUDA-event timing and the allocator's peak memory; gpu_benchmark.csv,
gpu_benchmark_tables.md, gpu_benchmark.png in ``--out-dir``. Without a
usable GPU it stops at once with a one-line error.

Usage:
    python tools/benchmark.py --out-dir docs/performance  # full run; leave the machine idle
    python tools/benchmark.py --quick --out-dir /tmp/bench         # smoke run
    python tools/benchmark.py --models ufo_s12 swin_t --sizes 1024 --precisions fp32
    python tools/benchmark.py --models ufo_s12 swin_t --sizes 512 --compile
    python tools/benchmark.py --train-only --train-sizes 512:2 --repeats 3
    python tools/benchmark.py --device cuda --out-dir work_dirs/gpu_benchmark  # GPU benchmark
    python tools/benchmark.py --device cuda --quick --out-dir /tmp/gpu_bench   # GPU smoke run
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.benchmark.report import print_table, summary, train_table, write_outputs  # noqa
from ufo_mm.benchmark.runner import Benchmark, resolve_precisions  # noqa: E402
from ufo_mm.benchmark.zoo import BACKBONES, FULL_MODELS, MODELS, TRAIN_MODELS  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu',
                   help="'cpu' (default): this benchmark; 'cuda' or 'cuda:N': the GPU "
                        "benchmark (ufo_mm.benchmark.gpu; its options: --device cuda --help)")
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
    p.add_argument('--compile', action='store_true',
                   help='also time torch.compile(model) of every backbone and training case')
    p.add_argument('--train', action='store_true', help='also time training steps')
    p.add_argument('--train-only', action='store_true', help='training steps only')
    p.add_argument('--train-models', nargs='+', default=['ufo_s12', 'swin_t'],
                   choices=TRAIN_MODELS)
    p.add_argument('--train-sizes', nargs='+', default=['512:2', '1024:1'],
                   help='training inputs: SIDE or HxW, then :BATCH (default 1)')
    p.add_argument('--no-flops', action='store_true', help='do not count FLOPs')
    p.add_argument('--out-dir', default='work_dirs/benchmark')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: sizes 256 and 512 unless given, 1 timed run, '
                        'fp32, backbones only unless --models is given, training at 256:1')
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
        if '--train-sizes' not in given:
            args.train_sizes = ['256:1']
        args.warmup, args.repeats = 1, 1
        args.retries = 0
    if args.train_only:
        args.train, args.models = True, []
    args.precisions = resolve_precisions(args.precisions)
    args.full_precisions = resolve_precisions(args.full_precisions)
    return args


def gpu_requested(argv) -> bool:
    """Whether ``argv`` asks for the GPU benchmark: ``--device`` other than cpu,
    or the CPU dry run of its plumbing (``--gpu-plan``)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--device', default='cpu')
    pre.add_argument('--gpu-plan', action='store_true')
    known, _ = pre.parse_known_args(argv)
    return known.device != 'cpu' or known.gpu_plan


def main_gpu(argv):
    """The GPU benchmark (ufo_mm.benchmark.gpu); a device that cannot run it
    ends the program with one line on stderr and exit status 1."""
    from ufo_mm.benchmark import gpu
    try:
        return gpu.run_gpu_benchmark(gpu.parse_args(argv))
    except gpu.DeviceUnavailable as e:
        sys.exit(f'benchmark: {e}')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if gpu_requested(argv):
        return main_gpu(argv)
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    benchmark = Benchmark(args)
    import torch
    from ufo_mm import cpu_features
    print(f'torch {torch.__version__}, threads per case: {args.threads} '
          f'(torch.set_num_threads), CPU capability: '
          f'{torch.backends.cpu.get_cpu_capability()}, cases run one at a time', flush=True)
    print(f'{cpu_features.bf16_status()}; precisions: {", ".join(args.precisions)}'
          + ('' if cpu_features.bf16_native() or 'bf16-emulated' in args.precisions else
             ' (bf16 not run: pass --precisions fp32 bf16 to measure it emulated)'), flush=True)
    rows = benchmark.run()
    print_table(rows, args.threads)
    print('\n'.join(train_table(rows)))
    lines = summary(rows, benchmark.gemm)
    print('\n' + '\n'.join(lines))
    csv_path, png_path = write_outputs(rows, lines, args.out_dir, args.threads)
    print(f'\nwrote {csv_path}, {png_path}, benchmark_summary.txt and benchmark_tables.md')
    return rows


if __name__ == '__main__':
    main()
