"""Whole-image segmentation on one GPU: UperNet and Semantic FPN S12/16, whole
against streamed, from 2048 up to 32768 px (and 65536 if asked), with time,
peak GPU memory, peak host memory and label agreement
(``ufo_mm.benchmark.gpu_stream``).

    python tools/benchmark_gpu_stream.py --out-dir work_dirs/gpu_stream
    python tools/benchmark_gpu_stream.py --sides 2048 4096 32768 65536 --token-dtype bf16

Writes gpu_stream.csv, gpu_stream.md and gpu_stream.png to --out-dir; one
JSON line per case on stdout as it runs.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from ufo_mm.benchmark.gpu_stream import CONFIGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--device', default='cuda')
    p.add_argument('--models', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument('--sides', nargs='+', type=int, default=[2048, 4096, 8192, 16384, 32768])
    p.add_argument('--methods', nargs='+', default=['whole', 'stream'],
                   choices=['whole', 'stream'])
    p.add_argument('--precisions', nargs='+', default=['fp32', 'tf32'],
                   choices=['fp32', 'tf32', 'bf16'])
    p.add_argument('--token-dtype', choices=['fp32', 'bf16', 'fp16'], default=None,
                   help='storage of the streamed token tensors (default fp32: exact)')
    p.add_argument('--token-device', default='auto', help='auto, cuda or cpu')
    p.add_argument('--whole-max-side', type=int, default=8192,
                   help='largest side tried in whole mode')
    p.add_argument('--time-budget-s', type=float, default=300.,
                   help='skip cases whose extrapolated time would overrun this budget')
    p.add_argument('--out-dir', default='work_dirs/gpu_stream')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from ufo_mm.devices import DeviceError, resolve_device
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        raise SystemExit(f'benchmark_gpu_stream: {e}')
    if device.type != 'cuda':
        raise SystemExit('benchmark_gpu_stream: this benchmark times a GPU; '
                         'tools/benchmark_large.py is the CPU one')
    from ufo_mm.benchmark import gpu_stream
    rows = gpu_stream.run(args.models, args.sides, args.methods, args.precisions, device,
                          args.token_dtype, args.token_device, args.whole_max_side,
                          args.time_budget_s, log=lambda s: print(s, flush=True))
    paths = gpu_stream.write(rows, args.out_dir)
    print(open(paths['md']).read(), flush=True)


if __name__ == '__main__':
    main()
