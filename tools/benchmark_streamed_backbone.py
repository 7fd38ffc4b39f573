"""Streamed UFO-ViT backbone against the whole-image fast route, same run.

Times the patch embedding and the blocks (to the four kept token tensors) of
the whole-image route and of the streamed route at each side, alternating
them round after round; prints medians (wall and CPU seconds), the ratios to
the whole-image route and the largest difference of the kept tensors
(``ufo_mm.benchmark.streamed_backbone``).

    python tools/benchmark_streamed_backbone.py --sides 2048 4096 --threads 2
    python tools/benchmark_streamed_backbone.py --cases whole streamed streamed-reference
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from ufo_mm import cpu_features  # noqa: E402
from ufo_mm.benchmark.streamed_backbone import CASES, report, run  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='small_12_p16', help='UFOViT arch')
    p.add_argument('--sides', type=int, nargs='+', default=[2048, 4096],
                   help='square image sides')
    p.add_argument('--cases', nargs='+', choices=CASES, default=['whole', 'streamed'],
                   help='what to time; the first is the reference of the ratios')
    p.add_argument('--rounds', type=int, default=3, help='timed runs of each case per side')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', help='also write the rows to this JSON file and a .md beside it')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.rounds < 1:
        raise SystemExit('benchmark_streamed_backbone: --rounds must be >= 1')
    torch.set_num_threads(args.threads)
    results = run(args.arch, args.sides, args.rounds, args.cases)
    head = (f'UFOViT {args.arch}, embedding + blocks to the kept token tensors, fp32, '
            f'{args.threads} threads, median of {args.rounds} (cases alternated); '
            f'CPU: {cpu_features.bf16_status()}')
    lines = [head, ''] + report(results)
    print('\n'.join(lines))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(arch=args.arch, threads=args.threads, rounds=args.rounds,
                           results={str(k): v for k, v in results.items()}), f, indent=1)
        with open(osp.splitext(args.out)[0] + '.md', 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return results


if __name__ == '__main__':
    main()
