"""Where a UFO-ViT forward spends its time, and how each part scales with the input.

Times the three stages of the backbone (patch embedding + position encoding,
the blocks, the pyramid adapters) at two or more input sizes, alternating the
sizes round after round in one process so that a shared machine's slow phases
hit every size alike; prints the median of each stage and its growth against
the smallest size (pixels x4 -> ideal x4 for a linear-cost model). ``--ops``
adds a ``torch.profiler`` table of operator self-times at each size, the
largest growth first. For whole-model comparisons against peers use
``tools/benchmark.py``.

    python tools/profile_backbone.py small_12_p16 --sizes 1024 2048
    python tools/profile_backbone.py small_12_p16 --sizes 1024 2048 --precision bf16 --ops
"""
import argparse
import statistics
import sys
import time
from typing import Dict, List

import torch

from ufo_mm import cpu_features
from ufo_mm.models import UFOViT

STAGES = ('patch embed + pos', 'blocks', 'adapters', 'total')


def timed_stages(model: UFOViT, x: torch.Tensor) -> List[float]:
    """Seconds of each of :data:`STAGES` for one forward; the same computation
    as ``model(x)`` (checked against it in the tests)."""
    route = model.stages(x)  # the fast route in CPU inference, as model(x) takes
    t = [time.perf_counter()]
    tokens, (B, C, Hp, Wp) = route.embed(x)
    t.append(time.perf_counter())
    feats = route.forward_blocks(tokens, B, C, Hp, Wp)
    t.append(time.perf_counter())
    outs = route.forward_pyramid(feats, x.shape[-2:])
    t.append(time.perf_counter())
    del outs
    return [b - a for a, b in zip(t, t[1:])] + [t[-1] - t[0]]


def op_times(model: UFOViT, x: torch.Tensor) -> Dict[str, float]:
    """Self CPU time (ms) of each operator in one forward."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    return {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}


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
    torch.manual_seed(0)
    model = UFOViT(arch=args.arch, attn_type=args.attn_type).eval()
    sizes = sorted(args.sizes)
    inputs = {s: torch.randn(1, 3, s, s) for s in sizes}
    times = {s: [] for s in sizes}
    ops = {}
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16,
                                         enabled=args.precision == 'bf16'):
        for s in sizes:  # warm-up
            model(inputs[s])
        for _ in range(args.rounds):
            for s in sizes:
                times[s].append(timed_stages(model, inputs[s]))
        if args.ops:
            ops = {s: op_times(model, inputs[s]) for s in sizes}
    medians = {s: [1e3 * statistics.median(r[i] for r in times[s]) for i in range(len(STAGES))]
               for s in sizes}
    base = sizes[0]
    print(f'UFOViT {args.arch} attn={args.attn_type} {args.precision}, {args.threads} threads, '
          f'median of {args.rounds} forwards per size (sizes alternated), ms')
    if args.precision == 'bf16' and not cpu_features.bf16_native():
        print(f'NOTE: {cpu_features.bf16_status()}')
    head = f'{"stage":20s}' + ''.join(f'{s:>10d}' for s in sizes) + \
        ''.join(f'{"x" + str(s) + "/" + str(base):>14s}' for s in sizes[1:])
    print(head)
    for i, name in enumerate(STAGES):
        row = f'{name:20s}' + ''.join(f'{medians[s][i]:10.1f}' for s in sizes)
        row += ''.join(f'{medians[s][i] / medians[base][i]:14.2f}' for s in sizes[1:])
        print(row)
    print(f'(pixels grow x{", x".join(f"{(s / base) ** 2:g}" for s in sizes[1:])}: '
          'a linear-cost stage grows as much)')
    if ops:
        big = sizes[-1]
        print(f'\noperator self time, ms (one profiled forward each; profiler overhead included)')
        print(f'{"operator":44s}' + ''.join(f'{s:>10d}' for s in sizes) + f'{"growth":>9s}')
        keys = sorted(ops[big], key=lambda k: -ops[big][k])[:args.top]
        for k in keys:
            a = ops[base].get(k, 0.)
            print(f'{k[:44]:44s}' + ''.join(f'{ops[s].get(k, 0.):10.1f}' for s in sizes) +
                  (f'{ops[big][k] / a:9.2f}' if a else f'{"-":>9s}'))
    return medians


if __name__ == '__main__':
    main()
    sys.exit(0)
