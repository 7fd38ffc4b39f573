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
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.analysis.cp_memory import cp_memory_table, measure_cases  # noqa: E402


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
    args = parser.parse_args(argv)
    rows = measure_cases(args.arch, args.sizes, args.batch, args.repeat, args.device, args.amp)
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
    print(cp_memory_table(rows, label))
    return rows


if __name__ == '__main__':
    main()
