"""Write the synthetic COCO, ADE20K and/or ImageNet-layout demo datasets.

Examples::

    python tools/make_demo_data.py all   # data/synthetic_coco, _ade20k and _imagenet
    python tools/make_demo_data.py coco --num-train 400 --num-val 100 --img-size 128
    python tools/make_demo_data.py ade20k --img-size 96x128 --seed 3 --val-seed 7
    python tools/make_demo_data.py imagenet --num-train 2000 --num-val 500   # 64 px
"""
import argparse
import json
import sys
import time
from pathlib import Path

# Runs from a checkout whether or not ufo_mm is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ufo_mm.datasets import make_ade20k, make_coco, make_imagenet  # noqa: E402
from ufo_mm.datasets.shapes import MIN_SIDE  # noqa: E402
from ufo_mm.datasets.synthetic_coco import VAL_SEED_OFFSET  # noqa: E402

COCO_DIR = 'synthetic_coco'
ADE_DIR = 'synthetic_ade20k'
IMAGENET_DIR = 'synthetic_imagenet'
# 128 px for the dense tasks, 64 px (one shape per image) for classification
DEFAULT_SIZE = dict(coco=128, ade20k=128, imagenet=64)


def parse_size(text):
    """'128' -> 128, '96x128' -> (96, 128) as (H, W)."""
    parts = text.lower().split('x')
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f'expected S or HxW, got {text!r}')
    if min(int(p) for p in parts) < MIN_SIDE:
        raise argparse.ArgumentTypeError(f'each side must be at least {MIN_SIDE}, got {text!r}')
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate synthetic shape datasets in the real COCO instances, '
                    'ADE20K (ADEChallengeData2016) and ImageNet folder layouts, deterministic '
                    f'from the seeds. COCO goes to OUT/{COCO_DIR} (train2017/, val2017/, '
                    f'annotations/), ADE20K to OUT/{ADE_DIR}/ADEChallengeData2016 (images/, '
                    f'annotations/), ImageNet to OUT/{IMAGENET_DIR} (train/CLASS/, val/CLASS/, '
                    'meta/).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('dataset', choices=('coco', 'ade20k', 'imagenet', 'all'),
                        help='what to generate')
    parser.add_argument('--out', type=Path, default=Path('data'),
                        help=f'parent folder of {COCO_DIR}/, {ADE_DIR}/ and {IMAGENET_DIR}/')
    parser.add_argument('--num-train', type=int, default=400, help='training images per dataset')
    parser.add_argument('--num-val', type=int, default=100, help='validation images per dataset')
    parser.add_argument('--img-size', type=parse_size, default=None,
                        help=f'image size: S for SxS or HxW; each side >= {MIN_SIDE} (default: '
                        + ', '.join(f'{k} {v}' for k, v in DEFAULT_SIZE.items()) + ')')
    parser.add_argument('--seed', type=int, default=0, help='seed of the training split')
    parser.add_argument('--val-seed', type=int, default=None,
                        help=f'validation split seed; when %(default)s, seed + {VAL_SEED_OFFSET}')
    return parser.parse_args(argv)


def coco_lines(ann_files, args):
    for split, ann_file in ann_files.items():
        coco = json.loads(ann_file.read_text())
        yield (f'coco {split}: {len(coco["images"])} images, {len(coco["annotations"])} '
               f'instances -> {ann_file.parent.parent / split}/, {ann_file}')


def ade20k_lines(data_root, args):
    for split, count in (('training', args.num_train), ('validation', args.num_val)):
        yield (f'ade20k {split}: {count} images -> {data_root}/images/{split}/, '
               f'{data_root}/annotations/{split}/')


def imagenet_lines(data_root, args):
    for split, count in (('train', args.num_train), ('val', args.num_val)):
        yield f'imagenet {split}: {count} images -> {data_root}/{split}/, ' \
              f'{data_root}/meta/{split}.txt'


# dataset: (writer, folder under --out, what it wrote as lines for the user)
DATASETS = {
    'coco': (make_coco, COCO_DIR, coco_lines),
    'ade20k': (make_ade20k, ADE_DIR, ade20k_lines),
    'imagenet': (make_imagenet, IMAGENET_DIR, imagenet_lines),
}


def main(argv=None):
    args = parse_args(argv)
    common = dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                  val_seed=args.val_seed)
    for name, (write, folder, describe) in DATASETS.items():
        if args.dataset not in (name, 'all'):
            continue
        start = time.time()
        size = DEFAULT_SIZE[name] if args.img_size is None else args.img_size
        written = write(args.out / folder, img_size=size, **common)
        print('\n'.join(describe(written, args)))
        print(f'{name} written in {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
