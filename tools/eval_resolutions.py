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
import copy
import json
import os.path as osp
import sys
import time
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402

DEFAULT_SIZES = (128, 256, 512, 1024, 2048)


def default_num_val(size: int) -> int:
    """100 images up to 256 pixels, fewer for larger ones (a 2048 image takes
    ~25 s to draw and holds 256x the pixels of a 128 one): 512 -> 50,
    1024 -> 25, 2048 -> 12."""
    return int(min(100, max(10, round(100 * 256 / size))))


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


def validation_split(data_dir, size: int, num: int, seed: int, val_seed: int) -> Path:
    """data_root of the validation split at ``size``; drawn once, then reused."""
    from ufo_mm.datasets import make_ade20k
    root = Path(data_dir) / f'ade20k_{size}_seed{val_seed}_n{num}'
    data_root = root / 'ADEChallengeData2016'
    done = root / 'complete'
    if not done.is_file():
        start = time.time()
        make_ade20k(root, num_train=0, num_val=num, img_size=size, seed=seed,
                    val_seed=val_seed)
        done.write_text('ok\n')
        print(f'[{size}] drew {num} validation images in {time.time() - start:.1f} s '
              f'-> {data_root}', flush=True)
    return data_root


def drop_resize(pipeline):
    """The pipeline without Resize-type steps (images stay at native size)."""
    return [t for t in pipeline if t.get('type') not in ('Resize', 'RandomResize')]


def size_config(cfg, data_root: Path, size: int, args, work_dir: Path):
    """A copy of ``cfg`` that tests ``data_root`` with ``args``' inference mode."""
    cfg = copy.deepcopy(cfg)
    dataset = cfg.test_dataloader.dataset
    dataset.data_root = str(data_root)
    dataset.data_prefix = dict(img_path='images/validation',
                               seg_map_path='annotations/validation')
    if not args.keep_resize:
        dataset.pipeline = drop_resize(dataset.pipeline)
    cfg.test_pipeline = dataset.pipeline
    cfg.test_dataloader.batch_size = 1
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    if args.mode == 'slide':
        crop = args.crop_size or cfg.get('crop_size', (512, 512))[0]
        stride = args.stride or max(1, crop * 2 // 3)
        cfg.model.test_cfg = dict(mode='slide', crop_size=(crop, crop), stride=(stride, stride))
    else:
        cfg.model.test_cfg = dict(mode='whole')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    cfg.work_dir = str(work_dir / str(size))
    cfg.default_hooks.visualization = dict(type='SegVisualizationHook', draw=False)
    cfg.log_level = 'WARNING'
    return cfg


def evaluate_size(cfg, size: int, num: int, args, work_dir: Path) -> dict:
    from ufo_mm.tools_common import build_runner
    val_seed = args.seed + 1000 if args.val_seed is None else args.val_seed
    data_root = validation_split(args.data_dir, size, num, args.seed, val_seed)
    size_cfg = size_config(cfg, data_root, size, args, work_dir)
    runner = build_runner(size_cfg)
    start = time.time()
    metrics = runner.test()
    seconds = time.time() - start
    row = dict(size=size, images=num, mIoU=float(metrics['mIoU']), aAcc=float(metrics['aAcc']),
               mAcc=float(metrics['mAcc']), seconds_per_image=seconds / num,
               mode=args.mode, data_root=str(data_root))
    if args.pictures:
        from ufo_mm.seg_pictures import split_files, write_seg_pictures
        model = runner.model
        model.cfg = size_cfg
        meta = runner.test_dataloader.dataset.metainfo
        pairs = split_files(size_cfg.test_dataloader.dataset, args.pictures)
        paths = write_seg_pictures(model, pairs, work_dir / 'pictures' / str(size),
                                   palette=meta['palette'], class_names=meta['classes'])
        row['pictures'] = [str(p) for p in paths]
    print(f'[{size}] mIoU {row["mIoU"]:.2f}  aAcc {row["aAcc"]:.2f}  '
          f'{row["seconds_per_image"]:.2f} s/image', flush=True)
    return row


def format_table(rows, reference: int) -> str:
    ref = next((r['mIoU'] for r in rows if r['size'] == reference), None)
    lines = ['| size | images | mIoU | change vs %d | aAcc | s/image |' % reference,
             '|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        delta = '' if ref is None else f'{r["mIoU"] - ref:+.2f}'
        lines.append(f'| {r["size"]} | {r["images"]} | {r["mIoU"]:.2f} | {delta} | '
                     f'{r["aAcc"]:.2f} | {r["seconds_per_image"]:.2f} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config

    import ufo_mm  # noqa: F401  registers UFOViT; safe checkpoint loading
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
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
