"""Where a UFO-ViT forward spends its time, and how each part scales with the input.

The three stages of the backbone (patch embedding + position encoding, the
blocks, the pyramid adapters) are timed at two or more input sizes, the sizes
alternated round after round in one process so that a shared machine's slow
phases hit every size alike; the medians, their growth against the smallest
size and, optionally, a ``torch.profiler`` table of operator self-times.
``tools/profile_backbone.py`` is the command line.
"""
import statistics
import time
from typing import Dict, List, Sequence

import torch

from ufo_mm.models import UFOViT

STAGES = ('patch embed + pos', 'blocks', 'adapters', 'total')


def timed_stages(model: UFOViT, x: torch.Tensor) -> List[float]:
    """Seconds of each of :data:`STAGES` for one forward; the same computation
    as ``model(x)`` (checked against it in the tests)."""
    k = model.kernels_for(x)  # the fast route's in CPU inference, as model(x) takes
    t = [time.perf_counter()]
    tokens, (B, C, Hp, Wp) = model.embed(x, k)
    t.append(time.perf_counter())
    feats = model.forward_blocks(tokens, B, C, Hp, Wp, kernels=k)
    t.append(time.perf_counter())
    outs = model.forward_pyramid(feats, x.shape[-2:], k)
    t.append(time.perf_counter())
    del outs
    return [b - a for a, b in zip(t, t[1:])] + [t[-1] - t[0]]


def op_times(model: UFOViT, x: torch.Tensor) -> Dict[str, float]:
    """Self CPU time (ms) of each operator in one forward."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    return {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}


def profile_stages(arch: str, sizes: Sequence[int], precision: str = 'fp32',
                   attn_type: str = 'ufo', rounds: int = 5, ops: bool = False):
    """Median ms of each of :data:`STAGES` per square input side (``{size:
    [ms per stage]}``) over ``rounds`` forwards after one warm-up, sizes
    alternated; with ``ops``, also ``{size: {operator: self ms}}`` (else ``{}``)."""
    torch.manual_seed(0)
    model = UFOViT(arch=arch, attn_type=attn_type).eval()
    sizes = sorted(sizes)
    inputs = {s: torch.randn(1, 3, s, s) for s in sizes}
    times = {s: [] for s in sizes}
    op_table = {}
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16,
                                         enabled=precision == 'bf16'):
        for s in sizes:  # warm-up
            model(inputs[s])
        for _ in range(rounds):
            for s in sizes:
                times[s].append(timed_stages(model, inputs[s]))
        if ops:
            op_table = {s: op_times(model, inputs[s]) for s in sizes}
    medians = {s: [1e3 * statistics.median(r[i] for r in times[s]) for i in range(len(STAGES))]
               for s in sizes}
    return medians, op_table


def stage_report(medians: Dict[int, List[float]], ops: Dict[int, Dict[str, float]],
                 top: int = 15) -> List[str]:
    """The stage table (ms per size, growth against the smallest size) and, when
    ``ops`` has them, the ``top`` operators of the largest size."""
    sizes = sorted(medians)
    base = sizes[0]
    lines = [f'{"stage":20s}' + ''.join(f'{s:>10d}' for s in sizes) +
             ''.join(f'{"x" + str(s) + "/" + str(base):>14s}' for s in sizes[1:])]
    for i, name in enumerate(STAGES):
        row = f'{name:20s}' + ''.join(f'{medians[s][i]:10.1f}' for s in sizes)
        row += ''.join(f'{medians[s][i] / medians[base][i]:14.2f}' for s in sizes[1:])
        lines.append(row)
    lines.append(f'(pixels grow x{", x".join(f"{(s / base) ** 2:g}" for s in sizes[1:])}: '
                 'a linear-cost stage grows as much)')
    if ops:
        big = sizes[-1]
        lines.append('\noperator self time, ms (one profiled forward each; profiler overhead '
                     'included)')
        lines.append(f'{"operator":44s}' + ''.join(f'{s:>10d}' for s in sizes) + f'{"growth":>9s}')
        for k in sorted(ops[big], key=lambda k: -ops[big][k])[:top]:
            a = ops[base].get(k, 0.)
            lines.append(f'{k[:44]:44s}' + ''.join(f'{ops[s].get(k, 0.):10.1f}' for s in sizes) +
                         (f'{ops[big][k] / a:9.2f}' if a else f'{"-":>9s}'))
    return lines
