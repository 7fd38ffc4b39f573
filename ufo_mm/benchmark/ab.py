"""A/B timing of the UFOViT backbone between two checkouts of ufo-mm, interleaved.

One worker process per checkout (each imports ``ufo_mm`` from its own tree),
both alive for the whole run (:class:`ufo_mm.benchmark.harness.Worker`: a
JSON line per forward, watched): after a warm-up, every round times one
forward of A, then of B (the order alternates round by round), at each input
size. A slow phase of a shared machine then falls on both alike. Used to
check that a refactoring keeps the speed (``tools/benchmark_ab.py``).
"""
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence

from .harness import Worker

# Runs inside each worker; only uses what every version of ufo-mm has (so not
# the harness: the worker of an older checkout imports that checkout).
WORKER = r'''
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)
from ufo_mm.models import UFOViT
model = UFOViT(arch=sys.argv[1]).eval()
inputs = {}
print(json.dumps({"ready": True, "ufo_mm": __import__("ufo_mm").__file__}), flush=True)
for line in sys.stdin:
    side = int(line)
    x = inputs.setdefault(side, torch.randn(1, 3, side, side))
    with torch.no_grad():
        t0 = time.perf_counter()
        model(x)
        ms = 1e3 * (time.perf_counter() - t0)
    print(json.dumps({"ms": ms}), flush=True)
'''


class CheckoutWorker(Worker):
    """A process that times forwards of one checkout's UFOViT on request;
    ``where``: the ``ufo_mm`` it imported. ``timeout_s``: the longest a
    forward may take (None: no limit)."""

    def __init__(self, tree: str, arch: str, threads: int, timeout_s: Optional[float] = None):
        tree = os.path.abspath(tree)
        super().__init__([sys.executable, '-c', WORKER, arch, str(threads)],
                         env=dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS=str(threads)),
                         cwd=tree, timeout_s=timeout_s)
        self.where = self.receive()['ufo_mm']

    def forward_ms(self, side: int) -> float:
        return self.request(str(side))['ms']


def compare(tree_a: str, tree_b: str, sizes: Sequence[int], rounds: int = 5,
            arch: str = 'small_12_p16', threads: int = 2) -> Dict[int, Dict[str, List[float]]]:
    """{side: {'a': [ms per round], 'b': [...]}}: forwards of the two trees'
    backbones, one warm-up each, then ``rounds`` interleaved rounds."""
    workers = {'a': CheckoutWorker(tree_a, arch, threads),
               'b': CheckoutWorker(tree_b, arch, threads)}
    try:
        times = {s: {'a': [], 'b': []} for s in sizes}
        for s in sizes:
            for w in workers.values():
                w.forward_ms(s)
        for r in range(rounds):
            for s in sizes:
                for k in ('ab' if r % 2 == 0 else 'ba'):
                    times[s][k].append(workers[k].forward_ms(s))
        return times
    finally:
        for w in workers.values():
            w.close()


def report(times: Dict[int, Dict[str, List[float]]], label_a: str, label_b: str) -> str:
    """A markdown table: median and min per tree and size, and the B / A ratio."""
    lines = [f'| input | {label_a} median (min) ms | {label_b} median (min) ms | B / A |',
             '|---|---:|---:|---:|']
    for s, t in times.items():
        a, b = statistics.median(t['a']), statistics.median(t['b'])
        lines.append(f'| {s}x{s} | {a:.0f} ({min(t["a"]):.0f}) | {b:.0f} ({min(t["b"]):.0f}) '
                     f'| {b / a:.3f} |')
    return '\n'.join(lines)
