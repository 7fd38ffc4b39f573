"""Run a trained detector or segmentor on images far larger than it was trained on.

The same weights, no resizing: UFO-ViT computes its position encoding from the
token grid and its attention is linear in the number of tokens, so a model
trained on 128-px crops runs on a 2048x2048 image as it is. The tool reports
the inference time and the process's peak memory (RSS high-water mark) and
draws the predictions (mmdet's ``DetLocalVisualizer`` / mmseg's
``SegLocalVisualizer``).

Inputs, either
  * ``--images A.jpg B.png ...``: your images, each at its own size; or
  * (default) a composed image per ``--sizes`` entry, built from the config's
    validation images, which keep their pixel size (objects stay at the scale
    the model was trained on). Detection: the objects of validation images
    (their visible-mask pixels) pasted into grid cells of one continuous
    object-free synthetic background; segmentation: whole validation images
    tiled on the grid. The composed ground truth gives bbox/segm mAP
    (detection, pycocotools) or mIoU (segmentation) at that size.

Each size runs in its own subprocess, so every peak-memory figure belongs to
one size only. The logic is ``ufo_mm.evaluation.highres`` (scenes:
``ufo_mm.datasets.composed_scene``, metrics: ``ufo_mm.evaluation.metrics``).

Examples::

    python tools/infer_highres.py configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py \\
        work_dirs/mask-rcnn_ufo-vit-demo_synthetic/iter_3000.pth --sizes 512 1024 2048
    python tools/infer_highres.py CONFIG CKPT --images big_photo.jpg --out-dir work_dirs/highres

The config's test pipeline would shrink the input (mmdet: ``Resize`` to
1333x800, mmseg: 2048x512); the tool replaces every ``Resize`` of the test
pipeline by one to the input's own size (a no-op). Detection proposal and
detection counts (``test_cfg``) are scaled with the image area relative to the
config's test scale (``--max-dets`` caps them), since a larger image holds
more objects.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.evaluation.highres import format_table, run_one  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='mmdet or mmseg config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--images', nargs='+', help='run on these images (own sizes) '
                        'instead of composed ones')
    parser.add_argument('--sizes', nargs='+', type=int, default=[2048],
                        help='side of each square composed image')
    parser.add_argument('--tile-fraction', type=float, default=None,
                        help='share of grid cells filled from a validation image (default: '
                        '0.25 for detection, 1.0 for segmentation); the rest is background')
    parser.add_argument('--seed', type=int, default=0, help='which cells are filled, and the background')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections kept (test_cfg score_thr), drawn and evaluated')
    parser.add_argument('--max-dets', type=int, default=1000,
                        help='cap on detections per image after area scaling (mmdet)')
    parser.add_argument('--repeat', type=int, default=1, help='runs per input; median time')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--out-dir', default='work_dirs/infer_highres',
                        help='pictures and results.json go here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--single', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from ufo_mm.devices import DeviceError, resolve_device
    try:
        resolve_device(args.device)
    except DeviceError as e:
        raise SystemExit(f'infer_highres: {e}')
    if args.single:  # child: one input, one JSON line on stdout
        row = run_one(args.config, args.checkpoint, args.out_dir, size=args.sizes[0],
                      image_path=(args.images or [None])[0], cfg_options=args.cfg_options,
                      tile_fraction=args.tile_fraction, seed=args.seed,
                      score_thr=args.score_thr, max_dets=args.max_dets, repeat=args.repeat,
                      device=args.device)
        print('RESULT ' + json.dumps(row), flush=True)
        return row
    jobs = ([['--images', p] for p in args.images] if args.images
            else [['--sizes', str(s)] for s in args.sizes])
    # drop the multi-valued options, then give each child exactly one input
    base, skip = [], False
    for a in argv:
        if a in ('--images', '--sizes'):
            skip = True
            continue
        if skip and a.startswith('--'):
            skip = False
        if not skip:
            base.append(a)
    rows = []
    for job in jobs:
        cmd = [sys.executable, osp.abspath(__file__)] + base + job + ['--single']
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
        if proc.returncode or not lines:
            sys.stdout.write(proc.stdout[-4000:])
            raise SystemExit(f'infer_highres: {" ".join(job)} failed (exit {proc.returncode})')
        rows.append(json.loads(lines[-1][len('RESULT '):]))
    print('\n'.join(format_table(rows)))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'results.json').write_text(json.dumps(rows, indent=2))
    print(f'pictures and results.json in {out_dir}')
    return rows


if __name__ == '__main__':
    main()
