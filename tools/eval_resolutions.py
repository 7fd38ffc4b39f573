"""Evaluate one segmentation checkpoint on the synthetic ADE20K validation split
regenerated at several image sizes: mIoU per resolution, same weights.

    python tools/eval_resolutions.py CONFIG CHECKPOINT [--sizes 128 256 512 1024 2048]
        [--num-val N ...] [--seed 0] [--mode whole|slide] [--pictures K] [--json FILE]

For each size S the validation split (seed ``--seed`` + 1000 unless
``--val-seed``, i.e. never seen in training) is written once to
``--data-dir/ade20k_<S>_seed<V>_n<N>`` and evaluated with mmseg's own test loop
and ``IoUMetric``, images at their native size (any ``Resize`` of the config's
test pipeline is removed; ``--keep-resize`` keeps it). Textures have a fixed
period in pixels at every size while shapes and regions grow with the image,
so this measures what resolution independence is about: the same weights on
4x, 16x, 256x more tokens. Prints a table (size, images, mIoU, aAcc, seconds
per image) and writes it as JSON; ``--pictures K`` writes K image | ground
truth | prediction pictures per size.
"""
import argparse
import json
import os.path as osp
import sys
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

from ufo_mm.evaluation.resolutions import (DEFAULT_SIZES, default_num_val,  # noqa: E402
                                           evaluate_size, format_table)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='mmseg config (e.g. the synthetic demo config)')
    parser.add_argument('checkpoint', help='checkpoint to evaluate')
    parser.add_argument('--sizes', type=int, nargs='+', default=list(DEFAULT_SIZES),
                        help='square image sizes to evaluate')
    parser.add_argument('--num-val', type=int, nargs='+', default=None,
                        help='images per size: one number for all, or one per size '
                        '(default: 100 up to 256 px, then 100 * 256 / size, at least 10)')
    parser.add_argument('--seed', type=int, default=0, help='training seed of the data')
    parser.add_argument('--val-seed', type=int, default=None,
                        help='validation seed (default: seed + 1000, as make_demo_data.py)')
    parser.add_argument('--data-dir', default='data/seg_resolutions',
                        help='where the regenerated validation splits are cached')
    parser.add_argument('--work-dir', default=None,
                        help='logs, pictures and results (default: '
                        'work_dirs/eval_resolutions/<config name>)')
    parser.add_argument('--mode', choices=('whole', 'slide'), default='whole',
                        help='inference mode (slide uses --crop-size/--stride)')
    parser.add_argument('--crop-size', type=int, default=None,
                        help='slide window (default: the config\'s crop_size)')
    parser.add_argument('--stride', type=int, default=None,
                        help='slide stride (default: 2/3 of the window)')
    parser.add_argument('--keep-resize', action='store_true',
                        help='keep the Resize of the test pipeline (evaluate at the '
                        'config\'s test scale instead of the native size)')
    parser.add_argument('--pictures', type=int, default=0,
                        help='write this many prediction pictures per size')
    parser.add_argument('--json', default=None, help='results file '
                        '(default: <work-dir>/resolutions.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    args = parser.parse_args(argv)
    if args.num_val is not None and len(args.num_val) not in (1, len(args.sizes)):
        parser.error(f'--num-val takes 1 or {len(args.sizes)} numbers (one per size)')
    return args


def main(argv=None):
    args = parse_args(argv)
    from ufo_mm.builder import load_config
    cfg = load_config(args.config, args.cfg_options)
    if cfg.get('default_scope') != 'mmseg':
        raise ValueError(f'{args.config} is not an mmseg config (default_scope '
                         f'{cfg.get("default_scope")!r})')
    work_dir = Path(args.work_dir or osp.join(
        'work_dirs', 'eval_resolutions', osp.splitext(osp.basename(args.config))[0]))
    nums = args.num_val or [None]
    if len(nums) == 1:
        nums = nums * len(args.sizes)
    rows = []
    for size, num in zip(args.sizes, nums):
        rows.append(evaluate_size(cfg, size, num or default_num_val(size), args, work_dir))
    table = format_table(rows, args.sizes[0])
    print(f'\nmIoU per resolution ({args.mode} inference, checkpoint {args.checkpoint}):')
    print(table)
    out = Path(args.json or work_dir / 'resolutions.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(config=args.config, checkpoint=args.checkpoint,
                                   results=rows), indent=2))
    print(f'results written to {out}')
    return rows


if __name__ == '__main__':
    main()
