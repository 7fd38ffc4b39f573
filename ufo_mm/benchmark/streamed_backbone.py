"""Streamed backbone against the whole-image fast route, in one process.

The streamed route (``ufo_mm.streaming.StreamedUFOViT``) computes UFO-ViT's
kept token tensors band by band; the whole-image route computes them in one
go. Both compose ``UFOBlock``'s steps with the kernels ``UFOViT.kernels_for``
picks (on the CPU the fused oneDNN ones). This times, at each side, the
patch embedding and the blocks (up to the four kept token tensors; the
pyramid is left out: the streamed route makes it band by band in the heads)
of:

- ``whole``: ``embed`` + ``forward_blocks`` on the whole image;
- ``streamed``: ``StreamedUFOViT`` with the same kernels;
- ``streamed-reference`` (optional): the streamed route on the modules' own
  math, what it ran before it shared the kernels.

The cases alternate round after round, so a shared machine's slow phases hit
each alike; medians of wall and process CPU seconds, their ratios to
``whole`` in the same run, and the largest difference of the kept tensors.
``tools/benchmark_streamed_backbone.py`` is the command line.
"""
import statistics
import time
from typing import Dict, List, Sequence

import torch

from ufo_mm.models import UFOViT
from ufo_mm.models.ufo_vit import REFERENCE
from ufo_mm.streaming import bands
from ufo_mm.streaming.backbone import StreamedUFOViT

CASES = ('whole', 'streamed', 'streamed-reference')


def kept_tokens(model: UFOViT, x: torch.Tensor, case: str) -> List[torch.Tensor]:
    """The four kept token tensors (B, N, C) of ``x`` by ``case``."""
    if case == 'whole':
        k = model.kernels_for(x)
        tokens, shape = model.embed(x, k)
        feats = model.forward_blocks(tokens, *shape, kernels=k)
        return [f.permute(0, 2, 3, 1).flatten(1, 2) for f in feats]
    streamed = StreamedUFOViT(model, kernels=REFERENCE if case == 'streamed-reference' else None)
    streamed(bands.Tensor(x), x.shape[1])  # the pyramid's band nodes: not evaluated
    kept = streamed.kept
    streamed.close()
    return kept


def run(arch: str = 'small_12_p16', sides: Sequence[int] = (2048, 4096), rounds: int = 3,
        cases: Sequence[str] = ('whole', 'streamed'), seed: int = 0) -> Dict[int, dict]:
    """{side: {case: dict(wall_s, cpu_s, ratio_wall, ratio_cpu, max_abs_diff)}}."""
    torch.manual_seed(seed)
    model = UFOViT(arch=arch).eval()
    results = {}
    with torch.no_grad():
        for side in sides:
            x = torch.randn(1, 3, side, side)
            times: Dict[str, List[tuple]] = {c: [] for c in cases}
            outputs = {}
            for _ in range(rounds):
                for case in cases:
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = kept_tokens(model, x, case)
                    times[case].append((time.perf_counter() - t0, time.process_time() - c0))
                    outputs[case] = out
                    del out
            rows = {}
            for case in cases:
                wall = statistics.median(t for t, _ in times[case])
                cpu = statistics.median(c for _, c in times[case])
                rows[case] = dict(wall_s=wall, cpu_s=cpu)
            base = rows[cases[0]]
            for case in cases:
                r = rows[case]
                r['ratio_wall'] = r['wall_s'] / base['wall_s']
                r['ratio_cpu'] = r['cpu_s'] / base['cpu_s']
                r['max_abs_diff'] = max(float((a - b).abs().max()) for a, b in
                                        zip(outputs[case], outputs[cases[0]]))
            results[side] = rows
            del outputs
    return results


def report(results: Dict[int, dict]) -> List[str]:
    lines = ['| side | case | wall s | CPU s | wall / whole | CPU / whole | max abs diff |',
             '|---:|---|---:|---:|---:|---:|---:|']
    for side, rows in results.items():
        for case, r in rows.items():
            lines.append(f"| {side} | {case} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                         f"{r['ratio_wall']:.3f} | {r['ratio_cpu']:.3f} | "
                         f"{r['max_abs_diff']:.2e} |")
    return lines
