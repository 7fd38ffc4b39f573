"""A/B timing of the UFOViT backbone between two checkouts of ufo-mm, interleaved.

One worker process per checkout (each imports ``ufo_mm`` from its own tree),
both alive for the whole run: after a warm-up, every round times one forward
of A, then of B (the order alternates round by round), at each input size.
A slow phase of a shared machine then falls on both alike. Used to check that
a refactoring keeps the speed (``tools/benchmark_ab.py``).
"""
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Sequence

# Runs inside each worker; only uses what every version of ufo-mm has.
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


class Worker:
    """A process that times forwards of one checkout's UFOViT on request."""

    def __init__(self, tree: str, arch: str, threads: int):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree),
                   OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([sys.executable, '-c', WORKER, arch, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=os.path.abspath(tree))
        self.where = self._read()['ufo_mm']

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f'benchmark worker exited ({self.proc.wait()})')
        return json.loads(line)

    def forward_ms(self, side: int) -> float:
        self.proc.stdin.write(f'{side}\n')
        self.proc.stdin.flush()
        return self._read()['ms']

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def compare(tree_a: str, tree_b: str, sizes: Sequence[int], rounds: int = 5,
            arch: str = 'small_12_p16', threads: int = 2) -> Dict[int, Dict[str, List[float]]]:
    """{side: {'a': [ms per round], 'b': [...]}}: forwards of the two trees'
    backbones, one warm-up each, then ``rounds`` interleaved rounds."""
    workers = {'a': Worker(tree_a, arch, threads), 'b': Worker(tree_b, arch, threads)}
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
