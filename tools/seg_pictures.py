"""Write image | ground truth | prediction pictures of a segmentation checkpoint.

    python tools/seg_pictures.py CONFIG CHECKPOINT [--out-dir DIR] [--num 8]
        [--images IMG ...] [--cfg-options k=v ...]

By default the first ``--num`` images of the config's test split (with their
label maps); ``--images`` predicts the given files instead (no ground-truth
panel). Images are predicted at their own size with the config's test
pipeline. One PNG per image goes to ``--out-dir``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmseg config')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default=None,
                        help='default: work_dirs/seg_pictures/<config name>')
    parser.add_argument('--num', type=int, default=8, help='images of the test split')
    parser.add_argument('--images', nargs='+', default=None,
                        help='predict these image files instead (no ground truth)')
    parser.add_argument('--max-height', type=int, default=512,
                        help='shrink taller pictures to this height')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries (e.g. test_dataloader.dataset.data_root=...)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from ufo_mm.devices import DeviceError, resolve_device
    from ufo_mm.visualization.seg_pictures import load_segmentor, split_files, write_seg_pictures
    try:
        args.device = str(resolve_device(args.device))
    except DeviceError as e:
        raise SystemExit(f'seg_pictures: {e}')
    model = load_segmentor(args.config, args.checkpoint, device=args.device,
                           cfg_options=args.cfg_options)
    if args.images:
        pairs = [(p, None) for p in args.images]
    else:
        pairs = split_files(model.cfg.test_dataloader.dataset, args.num)
    out_dir = args.out_dir or osp.join('work_dirs', 'seg_pictures',
                                       osp.splitext(osp.basename(args.config))[0])
    paths = write_seg_pictures(model, pairs, out_dir, max_height=args.max_height)
    print(f'{len(paths)} pictures (image | ground truth | prediction) written to {out_dir}')
    return paths


if __name__ == '__main__':
    main()
