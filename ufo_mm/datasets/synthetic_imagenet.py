"""Synthetic image classification data in ImageNet's folder layout.

``make_imagenet`` writes::

    root/train/<class>/<class>_00000001.JPEG ...
    root/val/<class>/ILSVRC2012_val_00000001.JPEG ...
    root/meta/train.txt, root/meta/val.txt       "<class>/<file> <label>" per line

the layout mmpretrain's ``ImageNet`` dataset reads with ``split='train'`` /
``'val'`` (and its ``CustomDataset`` from the folders alone). Each image shows
one flat-coloured shape (``IMAGENET_CLASSES``, the project's shapes, so a
classifier pretrained here knows the objects of the synthetic COCO and ADE20K
sets), randomly rotated, stretched, scaled and placed, on the low-contrast
textured background of those sets, with pixel noise. Colours are random: only
the shape tells the class. Classes take turns (image i shows class
``i % 5``), so the splits are balanced.
"""
from pathlib import Path

from .shapes import (SHAPES, add_noise, clutter_background, image_rng, image_size,
                     paint_shapes, random_shape_mask, write_image)
from .synthetic_coco import VAL_SEED_OFFSET

IMAGENET_CLASSES = SHAPES
SPLITS = ('train', 'val')


def make_imagenet(root, num_train, num_val, img_size=64, seed=0, val_seed=None,
                  size_range=(0.4, 0.9)):
    """Write both splits and their ``meta/*.txt`` lists under ``root``; return ``root``
    (mmpretrain's ``data_root``).

    Args:
        root, num_train, num_val, img_size, seed, val_seed: as in
            :func:`ufo_mm.datasets.synthetic_coco.make_coco` (output folder,
            images per split, size (each side >= 32), per-split seeds; image i
            depends only on ``(seed, i)``; ``val_seed`` defaults to
            ``seed + VAL_SEED_OFFSET``).
        size_range: the shape's diameter as a fraction of the short image side.

    Raises:
        ValueError: a negative image count, a size under 32 px, or a size
            range outside (0, 1].
    """
    for name, num in (('num_train', num_train), ('num_val', num_val)):
        if not isinstance(num, int) or num < 0:
            raise ValueError(f'{name} must be an int >= 0, got {num!r}')
    if not 0 < size_range[0] <= size_range[1] <= 1:
        raise ValueError(f'size_range must satisfy 0 < low <= high <= 1, got {size_range}')
    size_hw = image_size(img_size)
    val_seed = seed + VAL_SEED_OFFSET if val_seed is None else val_seed
    root = Path(root)
    for split, num, split_seed in zip(SPLITS, (num_train, num_val), (seed, val_seed)):
        lines = []
        for i in range(1, num + 1):
            label = (i - 1) % len(IMAGENET_CLASSES)
            img = render_image(image_rng(split_seed, i), label, size_hw, size_range)
            cls = IMAGENET_CLASSES[label]
            name = f'{cls}_{i:08d}.JPEG' if split == 'train' else f'ILSVRC2012_val_{i:08d}.JPEG'
            write_image(root / split / cls / name, img)
            lines.append(f'{cls}/{name} {label}\n')
        (root / 'meta').mkdir(parents=True, exist_ok=True)
        (root / 'meta' / f'{split}.txt').write_text(''.join(lines))
    return root


def render_image(rng, label, size_hw, size_range=(0.4, 0.9)):
    """One ``(H, W, 3)`` uint8 RGB image of the shape ``IMAGENET_CLASSES[label]``."""
    mask = random_shape_mask(rng, IMAGENET_CLASSES[label], size_hw, size_range)
    img = paint_shapes(rng, clutter_background(rng, size_hw), [(label, mask, mask)])
    return add_noise(rng, img)
