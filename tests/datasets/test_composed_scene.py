"""ufo_mm.datasets.composed_scene: the large scenes tools/infer_highres.py runs on."""
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ufo_mm.datasets import composed_scene as scene
from ufo_mm.datasets import make_ade20k, make_coco


def test_composed_scene_pastes_objects_on_one_background(tmp_path):
    """The high-resolution scene: objects keep their pixels and annotations, and
    everything else is one continuous background (no tile edges that would look
    like large square objects)."""
    make_coco(tmp_path, num_train=1, num_val=3, img_size=64)
    ann_file = tmp_path / 'annotations' / 'instances_val2017.json'
    canvas, gt = scene.compose_coco(ann_file, tmp_path / 'val2017', (256, 192), fraction=0.5,
                                   seed=3)
    assert canvas.shape == (256, 192, 3) and canvas.dtype == np.uint8
    source = json.loads(ann_file.read_text())
    rng = np.random.default_rng(3)
    chosen = scene.grid_cells((256, 192), (64, 64), 0.5, rng)
    expected = scene.background((256, 192), rng)
    objects = np.zeros((256, 192), bool)
    for a in gt['annotations']:
        m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a['segmentation'], 256, 192)))
        assert m.sum() == a['area']
        objects |= m.astype(bool)
    assert len(gt['annotations']) == sum(
        sum(a['image_id'] == source['images'][n % 3]['id'] for a in source['annotations'])
        for n in range(len(chosen)))
    assert (canvas[~objects] == expected[~objects]).all()
    assert (canvas[objects] != expected[objects]).any(axis=-1).mean() > 0.9


def test_composed_segmentation_scene_tiles_images_and_labels(tmp_path):
    import cv2
    root = Path(make_ade20k(tmp_path, num_train=1, num_val=2, img_size=32))
    img_dir, ann_dir = root / 'images/validation', root / 'annotations/validation'
    canvas, labels = scene.compose_seg(img_dir, ann_dir, (64, 80), fraction=1.0, seed=0)
    assert canvas.shape == (64, 80, 3) and labels.shape == (64, 80)
    first = cv2.imread(str(img_dir / 'ADE_val_00000001.jpg'))[..., ::-1]
    label = cv2.imread(str(ann_dir / 'ADE_val_00000001.png'), cv2.IMREAD_UNCHANGED)
    assert (canvas[:32, :32] == first).all() and (labels[:32, :32] == label).all()
    assert (labels[:, 64:] == 0).all()  # the leftover strip is 'other'
