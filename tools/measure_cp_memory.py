"""Peak training memory of a UFOViT forward + backward, with and without
activation checkpointing (``with_cp``).

    python tools/measure_cp_memory.py [--arch small_12_p16] [--sizes 512 1024]
                                      [--batch 1] [--repeat 2]

Each (size, with_cp) runs in a fresh subprocess, and its peak resident memory
(``ru_maxrss``, the process's RSS high-water mark) is read after the passes:
``peak`` is that mark, ``train`` the part above the mark reached right after
building the model and input (weights, gradients and activations of the
pass). CPU only; prints a Markdown table.
"""
import argparse
import json
import os.path as osp
import resource
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def _maxrss_mib() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(arch: str, size: int, with_cp: bool, batch: int, repeat: int) -> dict:
    import torch

    from ufo_mm.models import UFOViT
    torch.manual_seed(0)
    model = UFOViT(arch=arch, with_cp=with_cp).train()
    x = torch.randn(batch, 3, size, size)
    base = _maxrss_mib()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        loss = sum(f.float().pow(2).mean() for f in model(x))
        loss.backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=False)
    return dict(arch=arch, size=size, with_cp=with_cp, batch=batch, base_mib=base,
                peak_mib=_maxrss_mib(), seconds=min(times),
                threads=torch.get_num_threads())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='small_12_p16')
    parser.add_argument('--sizes', nargs='+', type=int, default=[512, 1024])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=2,
                        help='passes per run; the time is the fastest')
    parser.add_argument('--child', nargs=2, metavar=('SIZE', 'WITH_CP'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.arch, int(args.child[0]), args.child[1] == '1', args.batch,
                       args.repeat)
        print(json.dumps(result))
        return result
    rows = []
    for size in args.sizes:
        for with_cp in (False, True):
            out = subprocess.run(
                [sys.executable, __file__, '--arch', args.arch, '--batch', str(args.batch),
                 '--repeat', str(args.repeat), '--child', str(size), str(int(with_cp))],
                capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f'UFOViT {args.arch}, batch {args.batch}, forward + backward in train mode, '
          f'{rows[0]["threads"]} thread(s)\n')
    print('| input | with_cp | peak RSS (MiB) | train part (MiB) | s / pass |')
    print('|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['with_cp']} | {r['peak_mib']:.0f} | "
              f"{r['peak_mib'] - r['base_mib']:.0f} | {r['seconds']:.1f} |")
    return rows


if __name__ == '__main__':
    main()
