"""Synthetic semantic segmentation data in the real ADE20K (``ADEChallengeData2016``) layout.

``make_ade20k`` writes::

    root/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_00000001.jpg
    root/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_00000001.png

The image is cut into a few Voronoi regions, each filled with a two-colour
texture (``stripes``, ``checker``, ``dots``, ``noise``) or, for label 0
("other"), a plain gradient; flat-coloured shapes (``circle`` ... ``cross``)
are drawn on top.  All colours are random, so classes differ only by texture or
shape.  Label maps are uint8 with 0 = other and ``i`` = ``ADE_CLASSES[i - 1]``,
matching mmseg's ``ADE20KDataset(reduce_zero_label=True)``, which turns 0 into
the ignore index 255 and ``i`` into ``i - 1``.
"""
from pathlib import Path

import numpy as np

from .shapes import (SHAPES, TEXTURES, add_noise, gradient, image_rng, image_size,
                     paint_shapes, place_shapes, random_colour, texture, write_image)

ADE_CLASSES = TEXTURES + SHAPES
ADE_PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
               [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]]
# The validation split is drawn from ``seed + VAL_SEED_OFFSET`` unless ``val_seed`` is given.
VAL_SEED_OFFSET = 1000
OTHER_PROBABILITY = 0.2
SPLITS = (('training', 'train'), ('validation', 'val'))


def make_ade20k(root, num_train, num_val, img_size=128, seed=0, val_seed=None,
                max_shapes=5, size_range=(0.2, 0.5)):
    """Write both splits under ``root/ADEChallengeData2016``; return it (mmseg's ``data_root``).

    Args:
        root, num_train, num_val, img_size, seed, val_seed: as in
            :func:`ufo_mm.datasets.synthetic_coco.make_coco` (output folder,
            images per split, size, per-split seeds; image i depends only on
            ``(seed, i)``).
        max_shapes: most shapes per image (1 to ``max_shapes`` are drawn).
        size_range: shape diameter range as a fraction of the short image side.
    """
    size_hw = image_size(img_size)
    val_seed = seed + VAL_SEED_OFFSET if val_seed is None else val_seed
    data_root = Path(root) / 'ADEChallengeData2016'
    for (folder, prefix), num, split_seed in zip(SPLITS, (num_train, num_val), (seed, val_seed)):
        for i in range(1, num + 1):
            img, label = render_sample(image_rng(split_seed, i), size_hw, max_shapes, size_range)
            write_image(data_root / 'images' / folder / f'ADE_{prefix}_{i:08d}.jpg', img)
            write_image(data_root / 'annotations' / folder / f'ADE_{prefix}_{i:08d}.png', label)
    return data_root


def voronoi_regions(rng, size_hw, num_regions):
    """``(H, W)`` int map assigning each pixel to the nearest of ``num_regions`` random seeds."""
    h, w = size_hw
    seeds = rng.uniform(0, 1, (num_regions, 2)) * np.array([h, w])
    yy, xx = np.mgrid[0:h, 0:w]
    dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    return dist.argmin(0)


def render_sample(rng, size_hw, max_shapes=5, size_range=(0.2, 0.5)):
    """Draw one image and its label map: ``(rgb (H, W, 3) uint8, label (H, W) uint8)``."""
    h, w = size_hw
    img = np.zeros((h, w, 3), np.uint8)
    label = np.zeros((h, w), np.uint8)
    max_regions = 2 + max(1, round(2 * np.sqrt(h * w) / 128))
    regions = voronoi_regions(rng, size_hw, int(rng.integers(2, max_regions + 1)))
    for region in range(regions.max() + 1):
        inside = regions == region
        first = random_colour(rng)
        colours = (first, random_colour(rng, [first], min_distance=120))
        if rng.random() < OTHER_PROBABILITY:
            img[inside] = gradient(rng, size_hw, colours)[inside]
        else:
            kind = int(rng.integers(len(TEXTURES)))
            img[inside] = texture(rng, TEXTURES[kind], size_hw, colours)[inside]
            label[inside] = kind + 1
    shapes = place_shapes(rng, size_hw, int(rng.integers(1, max_shapes + 1)), size_range)
    img = add_noise(rng, paint_shapes(rng, img, shapes))
    for kind, mask, _ in shapes:
        label[mask] = len(TEXTURES) + kind + 1
    return img, label
