"""One segmentation checkpoint on the synthetic ADE20K validation split
regenerated at several image sizes: mIoU per resolution, same weights.

For each size the validation split (an unseen seed) is drawn once into a cache
folder and evaluated with mmseg's own test loop and ``IoUMetric``, images at
their native size (the test pipeline's ``Resize`` removed). Textures have a
fixed period in pixels at every size while shapes and regions grow with the
image, so this measures what resolution independence is about: the same
weights on 4x, 16x, 256x more tokens. ``tools/eval_resolutions.py`` is the
command line.
"""
import copy
import time
from pathlib import Path

DEFAULT_SIZES = (128, 256, 512, 1024, 2048)


def default_num_val(size: int) -> int:
    """100 images up to 256 pixels, fewer for larger ones (a 2048 image takes
    ~25 s to draw and holds 256x the pixels of a 128 one): 512 -> 50,
    1024 -> 25, 2048 -> 12."""
    return int(min(100, max(10, round(100 * 256 / size))))


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
    """A copy of ``cfg`` that tests ``data_root`` with ``args``' inference mode
    (``args``: ``mode``, ``crop_size``, ``stride``, ``keep_resize`` and
    ``checkpoint``, as ``tools/eval_resolutions.py`` parses them)."""
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
    """mmseg's test loop on the validation split drawn at ``size`` (``num``
    images, seed ``args.val_seed`` or ``args.seed`` + 1000, cached in
    ``args.data_dir``); ``args.pictures`` prediction pictures. Returns the row
    of the table: size, images, mIoU, aAcc, mAcc, seconds per image, ..."""
    from ufo_mm.apis.runner import build_runner
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
        from ufo_mm.visualization.seg_pictures import split_files, write_seg_pictures
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
    """Markdown table of the rows, mIoU change against size ``reference``."""
    ref = next((r['mIoU'] for r in rows if r['size'] == reference), None)
    lines = ['| size | images | mIoU | change vs %d | aAcc | s/image |' % reference,
             '|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        delta = '' if ref is None else f'{r["mIoU"] - ref:+.2f}'
        lines.append(f'| {r["size"]} | {r["images"]} | {r["mIoU"]:.2f} | {delta} | '
                     f'{r["aAcc"]:.2f} | {r["seconds_per_image"]:.2f} |')
    return '\n'.join(lines)
