"""Synthetic instance segmentation data in the real COCO ``instances`` format.

``make_coco`` writes::

    root/train2017/000000000001.jpg ...
    root/val2017/000000000001.jpg ...
    root/annotations/instances_train2017.json
    root/annotations/instances_val2017.json

Each image shows 1..``max_objects`` flat-coloured shapes (``COCO_CLASSES``) on a
low-contrast textured background with pixel noise.  Colours are random, so only
the shape tells the class.  Later shapes occlude earlier ones by at most a third;
annotations describe the *visible* part: polygons traced from the visible mask
that pycocotools rasterises back to exactly that mask, ``area`` is its pixel
count and ``bbox`` ``[x, y, w, h]`` its tight pixel box.
"""
import json
from pathlib import Path

import cv2
import numpy as np

from .shapes import (SHAPES, add_noise, clutter_background, image_rng, image_size,
                     paint_shapes, place_shapes, write_image)

COCO_CLASSES = SHAPES
# The validation split is drawn from ``seed + VAL_SEED_OFFSET`` unless ``val_seed`` is given.
VAL_SEED_OFFSET = 1000
SPLITS = ('train2017', 'val2017')


def make_coco(root, num_train, num_val, img_size=128, seed=0, val_seed=None,
              max_objects=8, size_range=(0.12, 0.4)):
    """Write train and val splits under ``root``; return ``{split: annotation json path}``.

    Args:
        root: output folder, created if needed.
        num_train, num_val: number of images per split.
        img_size: int (square) or ``(H, W)``; each side at least 32.
        seed: seed of the training split; image i depends only on ``(seed, i)``.
        val_seed: seed of the validation split, ``seed + VAL_SEED_OFFSET`` by default.
        max_objects: most shapes per image (at least one is always drawn).
        size_range: shape diameter range as a fraction of the short image side.
    """
    size_hw = image_size(img_size)
    val_seed = seed + VAL_SEED_OFFSET if val_seed is None else val_seed
    return {
        split: write_split(Path(root), split, num, split_seed, size_hw, max_objects, size_range)
        for split, num, split_seed in zip(SPLITS, (num_train, num_val), (seed, val_seed))
    }


def render_image(rng, size_hw, max_objects=8, size_range=(0.12, 0.4)):
    """Draw one image; return ``(rgb (H, W, 3) uint8, [(category_id, visible_mask)])``."""
    img = clutter_background(rng, size_hw)
    shapes = place_shapes(rng, size_hw, int(rng.integers(1, max_objects + 1)), size_range)
    img = add_noise(rng, paint_shapes(rng, img, shapes))
    return img, [(label + 1, visible) for label, _, visible in shapes]


def mask_to_annotation(mask):
    """COCO ``segmentation`` (polygons), ``area`` and ``bbox`` of a bool ``(H, W)`` mask.

    Contours are traced on a 3x nearest-upsampled mask and mapped back, so every
    vertex lies 1/6 px inside the outer pixel edges: the polygon encloses all mask
    pixel centres and no others, which makes pycocotools' rasterisation exact.
    """
    h, w = mask.shape
    up = cv2.resize(mask.astype(np.uint8), (3 * w, 3 * h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [np.round((c.reshape(-1).astype(float) + 0.5) / 3, 2).tolist() for c in contours]
    ys, xs = np.nonzero(mask)
    x, y = int(xs.min()), int(ys.min())
    bbox = [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1]
    return dict(segmentation=polygons, area=int(mask.sum()), bbox=bbox, iscrowd=0)


def write_split(root, split, num_images, seed, size_hw, max_objects=8, size_range=(0.12, 0.4)):
    """Render ``num_images`` images into ``root/split`` plus their annotation file; return it."""
    h, w = size_hw
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        img, objects = render_image(image_rng(seed, image_id), size_hw, max_objects, size_range)
        file_name = f'{image_id:012d}.jpg'
        write_image(root / split / file_name, img)
        images.append(dict(id=image_id, file_name=file_name, height=h, width=w))
        for category_id, mask in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=category_id, **mask_to_annotation(mask)))
    coco = dict(
        info=dict(description=f'ufo_mm synthetic shapes, {split}, seed {seed}', version='1.0'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(COCO_CLASSES)],
    )
    ann_file = root / 'annotations' / f'instances_{split}.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return ann_file
