"""Time and peak memory of whole-image segmentation against image side, in one run.

Streamed UFO-ViT (``ufo_mm.streaming``), the same model whole-image and in
mmseg's slide mode (512 crops, stride 341), Swin-T UperNet whole and slide;
each case in its own process (peak RSS of that case alone), random weights
and image. ``file`` and ``budget`` run infer_large's route on a tiled TIFF
(read and labels written band by band), ``budget`` under ``--max-ram-gb``
(the token tensors spilled to disk when they do not fit it); the TIFFs are
written into a temporary folder in ``--scratch-dir``, removed at the end.
Writes ``large_image.{json,md,png}`` to ``--out-dir`` and prints the table;
the logic is ``ufo_mm.benchmark.large_image``.

Examples::

    python tools/benchmark_large.py --sides 1024 2048 4096 8192 16384
    python tools/benchmark_large.py --models upernet_ufo_s12 --methods stream --sides 8192
    python tools/benchmark_large.py --models fpn_ufo_s12 --methods file budget \\
        --sides 4096 8192 16384 32768 --max-ram-gb 4 --threads 2
    python tools/benchmark_large.py --from-json a/large_image.json b/large_image.json \\
        --out-dir docs/large_images
"""
import argparse
import json
import os
import os.path as osp
import platform
import shutil
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.benchmark import large_image as bench  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(bench.SEGMENTORS),
                        choices=list(bench.SEGMENTORS))
    parser.add_argument('--methods', nargs='+', default=list(bench.METHODS),
                        choices=bench.METHODS)
    parser.add_argument('--sides', nargs='+', type=int, default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument('--threads', type=int, default=2, help='torch threads per case')
    parser.add_argument('--mem-limit-gb', type=float, default=22.,
                        help='a case past this resident set is stopped (out of memory)')
    parser.add_argument('--timeout', type=float, default=7200., help='seconds per case')
    parser.add_argument('--max-ram-gb', type=float, default=4.,
                        help="the 'budget' method's memory budget, GiB")
    parser.add_argument('--token-dtype', choices=('fp32', 'bf16'), default='fp32',
                        help="storage of the streamed methods' token tensors (bf16: half the "
                             'memory; the heads still compute in fp32)')
    parser.add_argument('--scratch-dir', default=None,
                        help="where the 'file' and 'budget' methods' TIFFs and spilled tokens "
                             'go (a temporary folder, removed at the end); None: --out-dir')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_large')
    parser.add_argument('--from-json', nargs='+', metavar='JSON',
                        help='measure nothing: tabulate and plot the rows of earlier runs '
                             '(their large_image.json files) together')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from ufo_mm import cpu_features
    title = (f'{platform.node() or "host"}: {cpu_features.bf16_status()}; fp32, '
             f'{args.token_dtype} tokens, {args.threads} threads, random weights')
    print(title, flush=True)
    if args.from_json:
        rows = [row for path in args.from_json for row in json.load(open(path))]
    else:
        scratch = args.scratch_dir or args.out_dir
        os.makedirs(scratch, exist_ok=True)
        image_dir = tempfile.mkdtemp(prefix='ufo-mm-benchmark-', dir=scratch)
        try:
            cases = bench.plan_cases(args.models, args.methods, args.sides, args.threads,
                                     args.max_ram_gb, image_dir,
                                     None if args.token_dtype == 'fp32' else args.token_dtype)
            rows = bench.run_cases(cases, args.mem_limit_gb, args.timeout,
                                   log=lambda line: print(line, flush=True))
        finally:
            shutil.rmtree(image_dir, ignore_errors=True)
    bench.write_outputs(rows, args.out_dir, title)
    print(bench.markdown(rows))
    print(f'wrote {args.out_dir}/large_image.{{json,md,png}}')
    return 0 if any(r['status'] == 'ok' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
