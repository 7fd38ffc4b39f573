"""Peak training memory of a UFOViT forward + backward, with and without
activation checkpointing (``with_cp``).

    python tools/measure_cp_memory.py [--arch small_12_p16] [--sizes 512 1024]
                                      [--batch 1] [--repeat 2] [--device cpu|cuda] [--amp]

CPU: each (size, with_cp) runs in a fresh subprocess, and its peak resident
memory (``ru_maxrss``, the process's RSS high-water mark) is read after the
passes: ``peak`` is that mark, ``train`` the part above the mark reached right
after building the model and input (weights, gradients and activations of the
pass). CUDA: ``torch.cuda.max_memory_allocated`` of each case, in one process,
``train`` again above what the model and input hold. ``--amp``: fp16 autocast
with a GradScaler on CUDA, bf16 autocast on CPU (what ``tools/train.py --amp``
uses). Prints a Markdown table.
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


def _pass(model, x, amp: bool, scaler=None):
    import torch
    dtype = torch.float16 if x.is_cuda else torch.bfloat16
    with torch.autocast(x.device.type, dtype=dtype, enabled=amp):
        loss = sum(f.float().pow(2).mean() for f in model(x))
    (scaler.scale(loss) if scaler is not None else loss).backward()
    model.zero_grad(set_to_none=False)


def child(arch: str, size: int, with_cp: bool, batch: int, repeat: int,
          device: str = 'cpu', amp: bool = False) -> dict:
    import torch

    from ufo_mm.models import UFOViT
    torch.manual_seed(0)
    model = UFOViT(arch=arch, with_cp=with_cp).train().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    cuda = device.startswith('cuda')
    scaler = torch.amp.GradScaler('cuda') if cuda and amp else None
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _maxrss_mib()
    times = []
    for _ in range(repeat + (1 if cuda else 0)):  # CUDA: one warm-up pass
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        _pass(model, x, amp, scaler)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times = times[1:] if cuda else times
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _maxrss_mib()
    return dict(arch=arch, size=size, with_cp=with_cp, batch=batch, base_mib=base,
                peak_mib=peak, seconds=min(times), device=device, amp=amp,
                threads=torch.get_num_threads())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='small_12_p16')
    parser.add_argument('--sizes', nargs='+', type=int, default=[512, 1024])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=2,
                        help='passes per run; the time is the fastest')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--amp', action='store_true',
                        help='fp16 autocast + GradScaler on CUDA, bf16 autocast on CPU')
    parser.add_argument('--child', nargs=2, metavar=('SIZE', 'WITH_CP'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.arch, int(args.child[0]), args.child[1] == '1', args.batch,
                       args.repeat, amp=args.amp)
        print(json.dumps(result))
        return result
    rows = []
    for size in args.sizes:
        for with_cp in (False, True):
            if args.device.startswith('cuda'):
                rows.append(child(args.arch, size, with_cp, args.batch, args.repeat,
                                  args.device, args.amp))
                continue
            out = subprocess.run(
                [sys.executable, __file__, '--arch', args.arch, '--batch', str(args.batch),
                 '--repeat', str(args.repeat), '--child', str(size), str(int(with_cp))]
                + (['--amp'] if args.amp else []),
                capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.device.startswith('cuda'):
        import torch
        where = f'{torch.cuda.get_device_name()}, max_memory_allocated'
        label = 'peak allocated (MiB)'
    else:
        where = f'CPU, {rows[0]["threads"]} thread(s), peak RSS'
        label = 'peak RSS (MiB)'
    precision = ('fp16' if args.device.startswith('cuda') else 'bf16') if args.amp else 'fp32'
    print(f'UFOViT {args.arch}, batch {args.batch}, forward + backward in train mode, '
          f'{precision}, {where}\n')
    if precision == 'bf16':
        from ufo_mm import cpu_features
        if not cpu_features.bf16_native():
            print(f'NOTE: {cpu_features.bf16_status()}\n')
    print(f'| input | with_cp | {label} | train part (MiB) | s / pass |')
    print('|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['with_cp']} | {r['peak_mib']:.0f} | "
              f"{r['peak_mib'] - r['base_mib']:.0f} | {r['seconds']:.3f} |")
    return rows


if __name__ == '__main__':
    main()
