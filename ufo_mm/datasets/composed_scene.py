"""Scenes far larger than the training images, composed from a validation split.

The validation images keep their pixel size, so objects stay at the scale the
model was trained on: detection pastes the objects of COCO images (their
visible-mask pixels) into grid cells of one continuous object-free synthetic
background; segmentation tiles whole images and label maps on the grid. The
composed ground truth comes with the scene (``ufo_mm.evaluation.highres``).
"""
import json
from pathlib import Path

import numpy as np


def grid_cells(size_hw, tile_hw, fraction, rng):
    """Top-left corners of the grid cells that get a tile (a random ``fraction`` of them)."""
    (H, W), (th, tw) = size_hw, tile_hw
    cells = [(y, x) for y in range(0, H - th + 1, th) for x in range(0, W - tw + 1, tw)]
    if not cells:
        raise ValueError(f'image {H}x{W} is smaller than one {th}x{tw} tile')
    k = max(1, int(round(fraction * len(cells))))
    chosen = sorted(rng.choice(len(cells), size=k, replace=False).tolist())
    return [cells[i] for i in chosen]


def background(size_hw, rng):
    """Object-free synthetic background (the datasets' own texture + noise), RGB uint8."""
    from ufo_mm.datasets.shapes import add_noise, clutter_background
    return add_noise(rng, clutter_background(rng, size_hw))


def compose_coco(ann_file, img_dir, size_hw, fraction=0.25, seed=0):
    """Paste the objects of COCO images, at their own pixel size, onto one ``size_hw`` scene.

    Returns ``(rgb (H, W, 3) uint8, coco_gt dict in COCO format with one image)``.
    The scene is one continuous object-free background of the datasets' own kind
    (texture + noise); the grid cells chosen (a ``fraction`` of them) each get the
    objects of the next image in file order, cycling: only the pixels of their
    visible masks, so no tile edge turns a patch of background into a square
    "object". All images must share one size (the cell size).
    """
    import cv2
    from pycocotools import mask as mask_utils
    ann = json.loads(Path(ann_file).read_text())
    images = ann['images']
    by_image = {}
    for a in ann['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    th, tw = images[0]['height'], images[0]['width']
    rng = np.random.default_rng(seed)
    chosen = grid_cells(size_hw, (th, tw), fraction, rng)
    H, W = size_hw
    canvas = background((H, W), rng)
    annotations = []
    for n, (y, x) in enumerate(chosen):
        info = images[n % len(images)]
        if (info['height'], info['width']) != (th, tw):
            raise ValueError('compose_coco needs images of one size; '
                             f"{info['file_name']} is {info['height']}x{info['width']}")
        tile = cv2.imread(str(Path(img_dir) / info['file_name']), cv2.IMREAD_COLOR)[..., ::-1]
        cell = canvas[y:y + th, x:x + tw]
        for a in by_image.get(info['id'], []):
            rle = mask_utils.merge(mask_utils.frPyObjects(a['segmentation'], th, tw))
            visible = mask_utils.decode(rle).astype(bool)
            cell[visible] = tile[visible]
            bx, by, bw, bh = a['bbox']
            seg = [[v + (x if i % 2 == 0 else y) for i, v in enumerate(poly)]
                   for poly in a['segmentation']]
            annotations.append(dict(id=len(annotations) + 1, image_id=1,
                                    category_id=a['category_id'], bbox=[bx + x, by + y, bw, bh],
                                    area=a['area'], iscrowd=a.get('iscrowd', 0),
                                    segmentation=seg))
    gt = dict(images=[dict(id=1, file_name='composed.jpg', height=H, width=W)],
              annotations=annotations, categories=ann['categories'])
    return canvas, gt


def compose_seg(img_dir, ann_dir, size_hw, img_suffix='.jpg', seg_map_suffix='.png',
                fraction=1.0, seed=0):
    """Tile segmentation images and label maps into one ``size_hw`` image.

    Returns ``(rgb (H, W, 3) uint8, label map (H, W) uint8)``; cells without a
    tile (``fraction`` < 1) and leftover strips are labelled 0 ('other').
    """
    import cv2
    names = sorted(p.name[:-len(img_suffix)] for p in Path(img_dir).glob(f'*{img_suffix}'))
    if not names:
        raise FileNotFoundError(f'no *{img_suffix} images in {img_dir}')
    first = cv2.imread(str(Path(img_dir) / (names[0] + img_suffix)))
    th, tw = first.shape[:2]
    rng = np.random.default_rng(seed)
    chosen = grid_cells(size_hw, (th, tw), fraction, rng)
    H, W = size_hw
    canvas = background(size_hw, rng)
    labels = np.zeros((H, W), np.uint8)
    for n, (y, x) in enumerate(chosen):
        name = names[n % len(names)]
        tile = cv2.imread(str(Path(img_dir) / (name + img_suffix)), cv2.IMREAD_COLOR)
        label = cv2.imread(str(Path(ann_dir) / (name + seg_map_suffix)), cv2.IMREAD_UNCHANGED)
        if tile.shape[:2] != (th, tw):
            raise ValueError(f'compose_seg needs tiles of one size; {name} is {tile.shape[:2]}')
        canvas[y:y + th, x:x + tw] = tile[..., ::-1]
        labels[y:y + th, x:x + tw] = label
    return canvas, labels
