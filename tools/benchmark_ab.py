"""Time the UFOViT backbone of two checkouts against each other, interleaved.

    git worktree add /tmp/before <commit>
    python tools/benchmark_ab.py /tmp/before . --sizes 1024 2048 --rounds 5

Prints a markdown table (median and min per checkout, B / A ratio of the
medians); CPU inference, fp32, batch 1 (ufo_mm.benchmark.ab).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.benchmark.ab import compare, report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('tree_a', help='checkout A (e.g. before a change)')
    p.add_argument('tree_b', help='checkout B (e.g. after it)')
    p.add_argument('--sizes', type=int, nargs='+', default=[1024, 2048])
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--arch', default='small_12_p16')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    times = compare(args.tree_a, args.tree_b, args.sizes, args.rounds, args.arch, args.threads)
    print(f'UFOViT {args.arch}, fp32, batch 1, {args.threads} threads, {args.rounds} '
          f'interleaved rounds; A = {args.tree_a}, B = {args.tree_b}')
    print(report(times, 'A', 'B'))
    return times


if __name__ == '__main__':
    main()
