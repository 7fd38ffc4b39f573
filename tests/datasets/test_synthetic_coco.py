"""Tests of ufo_mm.datasets.synthetic_coco: layout, determinism, exact masks, mmdet loading."""
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ufo_mm.datasets import COCO_CLASSES, make_coco
from ufo_mm.datasets.shapes import image_rng
from ufo_mm.datasets.synthetic_coco import mask_to_annotation, render_image

SIZE_HW = (64, 96)  # non-square on purpose


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_coco(root, num_train=5, num_val=3, img_size=SIZE_HW, seed=0)
    return root


def load(root, split):
    return json.loads((root / 'annotations' / f'instances_{split}.json').read_text())


def decode(ann, h, w):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], h, w)))


def test_layout(coco_root):
    for split, num in (('train2017', 5), ('val2017', 3)):
        coco = load(coco_root, split)
        assert [c['name'] for c in coco['categories']] == list(COCO_CLASSES)
        assert [c['id'] for c in coco['categories']] == list(range(1, len(COCO_CLASSES) + 1))
        assert [im['id'] for im in coco['images']] == list(range(1, num + 1))
        for im in coco['images']:
            assert (im['height'], im['width']) == SIZE_HW
            img = cv2.imread(str(coco_root / split / im['file_name']))
            assert img.shape == (*SIZE_HW, 3)
            count = sum(a['image_id'] == im['id'] for a in coco['annotations'])
            assert 1 <= count <= 8
        ids = [a['id'] for a in coco['annotations']]
        assert len(set(ids)) == len(ids)
        for ann in coco['annotations']:
            assert ann['iscrowd'] == 0 and 1 <= ann['category_id'] <= len(COCO_CLASSES)
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])


def test_deterministic_from_seed(tmp_path):
    make_coco(tmp_path / 'a', 2, 2, img_size=64, seed=3)
    make_coco(tmp_path / 'b', 2, 2, img_size=64, seed=3)
    make_coco(tmp_path / 'c', 2, 2, img_size=64, seed=4, val_seed=3)
    for rel in ('annotations/instances_train2017.json', 'annotations/instances_val2017.json',
                'train2017/000000000001.jpg', 'val2017/000000000002.jpg'):
        assert (tmp_path / 'a' / rel).read_bytes() == (tmp_path / 'b' / rel).read_bytes()
    train_a, val_a = load(tmp_path / 'a', 'train2017'), load(tmp_path / 'a', 'val2017')
    assert train_a['annotations'] != load(tmp_path / 'c', 'train2017')['annotations']
    # default val_seed differs from seed; an explicit val_seed equal to a train seed repeats it
    assert val_a['annotations'] != train_a['annotations']
    assert load(tmp_path / 'c', 'val2017')['annotations'] == train_a['annotations']


def test_annotations_are_exact_visible_masks():
    h, w = SIZE_HW
    for index in range(1, 4):
        img, objects = render_image(image_rng(0, index), SIZE_HW)
        union = np.zeros(SIZE_HW, int)
        for _, mask in objects:
            ann = mask_to_annotation(mask)
            np.testing.assert_array_equal(decode(ann, h, w), mask)
            union += mask
        assert union.max() == 1  # visible parts of different objects never overlap


def test_area_and_bbox_match_polygons(coco_root):
    h, w = SIZE_HW
    for ann in load(coco_root, 'train2017')['annotations']:
        x, y, bw, bh = ann['bbox']
        for poly in ann['segmentation']:
            xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
            assert xs.min() >= x and xs.max() <= x + bw and ys.min() >= y and ys.max() <= y + bh
        rle = mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], h, w))
        assert ann['area'] == pytest.approx(float(mask_utils.area(rle)), rel=0.01)
        assert mask_utils.toBbox(rle).tolist() == pytest.approx(ann['bbox'])


def test_mmdet_coco_dataset_loads(coco_root):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    coco = load(coco_root, 'train2017')
    dataset = CocoDataset(
        data_root=str(coco_root), ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), metainfo=dict(classes=COCO_CLASSES),
        pipeline=[dict(type=LoadImageFromFile),
                  dict(type=LoadAnnotations, with_bbox=True, with_mask=True)])
    assert len(dataset) == len(coco['images'])
    assert sum(len(dataset.get_data_info(i)['instances']) for i in range(len(dataset))) \
        == len(coco['annotations'])
    sample = dataset[0]
    anns = [a for a in coco['annotations'] if a['image_id'] == sample['img_id']]
    assert sample['img'].shape == (*SIZE_HW, 3)
    assert sample['gt_masks'].masks.shape == (len(anns), *SIZE_HW)
    for mask, ann in zip(sample['gt_masks'].masks, anns):
        np.testing.assert_array_equal(mask, decode(ann, *SIZE_HW))
    assert sample['gt_bboxes_labels'].tolist() == [a['category_id'] - 1 for a in anns]


def test_coco_metric_of_ground_truth_is_perfect(coco_root):
    import torch
    from mmdet.evaluation import CocoMetric

    coco = load(coco_root, 'val2017')
    metric = CocoMetric(ann_file=str(coco_root / 'annotations' / 'instances_val2017.json'),
                        metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=COCO_CLASSES)
    for im in coco['images']:
        anns = [a for a in coco['annotations'] if a['image_id'] == im['id']]
        boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a['bbox'] for a in anns)],
                             dtype=torch.float32)
        masks = torch.from_numpy(np.stack([decode(a, im['height'], im['width']) for a in anns]))
        pred = dict(bboxes=boxes, scores=torch.ones(len(anns)), masks=masks.bool(),
                    labels=torch.tensor([a['category_id'] - 1 for a in anns]))
        metric.process({}, [dict(img_id=im['id'], ori_shape=(im['height'], im['width']),
                                 pred_instances=pred)])
    results = metric.evaluate(size=len(coco['images']))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0, abs=1e-3)
    assert results['coco/segm_mAP'] == pytest.approx(1.0, abs=1e-3)
