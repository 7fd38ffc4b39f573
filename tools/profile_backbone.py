"""Where a UFO-ViT forward spends its time, and how each part scales with the input.

Times the three stages of the backbone (patch embedding + position encoding,
the blocks, the pyramid adapters; ``ufo_mm.analysis.stage_profile``) at two or
more input sizes, alternating the sizes round after round in one process so
that a shared machine's slow phases hit every size alike; prints the median of each stage and its growth against
the smallest size (pixels x4 -> ideal x4 for a linear-cost model). ``--ops``
adds a ``torch.profiler`` table of operator self-times at each size, the
largest growth first. For whole-model comparisons against peers use
``tools/benchmark.py``.

    python tools/profile_backbone.py small_12_p16 --sizes 1024 2048
    python tools/profile_backbone.py small_12_p16 --sizes 1024 2048 --precision bf16 --ops
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from ufo_mm import cpu_features  # noqa: E402
from ufo_mm.analysis.stage_profile import profile_stages, stage_report  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('arch', nargs='?', default='small_12_p16', help='UFOViT arch')
    p.add_argument('--sizes', type=int, nargs='+', default=[1024, 2048],
                   help='square input sides, smallest first')
    p.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32')
    p.add_argument('--attn-type', default='ufo', choices=('ufo', 'xca', 'softmax'))
    p.add_argument('--rounds', type=int, default=5, help='timed forwards per size')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--ops', action='store_true', help='also print an operator table')
    p.add_argument('--top', type=int, default=15, help='operators in the table')
    return p.parse_args(argv)


def main(argv=None) -> Dict[int, List[float]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    medians, ops = profile_stages(args.arch, args.sizes, args.precision, args.attn_type,
                                  args.rounds, args.ops)
    print(f'UFOViT {args.arch} attn={args.attn_type} {args.precision}, {args.threads} threads, '
          f'median of {args.rounds} forwards per size (sizes alternated), ms')
    if args.precision == 'bf16' and not cpu_features.bf16_native():
        print(f'NOTE: {cpu_features.bf16_status()}')
    print('\n'.join(stage_report(medians, ops, args.top)))
    return medians


if __name__ == '__main__':
    main()
    sys.exit(0)
