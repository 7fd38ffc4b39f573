"""ufo_mm.visualization.seg_pictures: label loading and the side-by-side layout."""
import cv2
import numpy as np
import pytest

from ufo_mm.visualization.overlays import colour_labels
from ufo_mm.visualization.seg_pictures import load_label, side_by_side, split_files

PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


def test_load_label_reduce_zero_label_like_mmseg(tmp_path):
    path = tmp_path / 'a.png'
    cv2.imwrite(str(path), np.array([[0, 1, 2, 255]], np.uint8))
    assert load_label(path).tolist() == [[0, 1, 2, 255]]
    assert load_label(path, reduce_zero_label=True).tolist() == [[255, 0, 1, 255]]
    with pytest.raises(FileNotFoundError):
        load_label(tmp_path / 'missing.png')


def test_side_by_side_places_image_gt_and_prediction():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    gt = rng.integers(0, 3, (40, 60))
    pred = np.zeros((40, 60), np.int64)
    pic = side_by_side(img, gt, pred, PALETTE, class_names=['a', 'b', 'c'], max_height=None)
    # title row (16 px for a 40 px image) on top, then the three 60 px panels with 4 px gaps
    title = 16
    assert pic.shape[1] == 3 * 60 + 2 * 4
    body = pic[title:title + 40]
    assert np.array_equal(body[:, :60], img)
    assert np.array_equal(body[:, 64:124], colour_labels(gt, PALETTE))
    assert np.array_equal(body[:, 128:188], colour_labels(pred, PALETTE))
    # a legend below the body shows every class colour
    legend = pic[title + 40:]
    for colour in PALETTE:
        assert (legend == colour).all(-1).any()


def test_side_by_side_without_ground_truth_and_shrinking():
    img = np.zeros((1024, 512, 3), np.uint8)
    pred = np.ones((1024, 512), np.int64)
    pic = side_by_side(img, None, pred, PALETTE, max_height=256)
    assert pic.shape[1] == 2 * 128 + 4  # two panels of 512 * 256 / 1024
    assert (pic[-256:, 132:] == PALETTE[1]).all()
    with pytest.raises(ValueError, match='same size'):
        side_by_side(img, np.zeros((8, 8), np.int64), pred, PALETTE)


def test_split_files_pairs_images_with_label_maps(tmp_path):
    from ufo_mm.datasets import make_ade20k
    root = make_ade20k(tmp_path, num_train=1, num_val=3, img_size=32)
    dataset = dict(data_root=str(root), img_suffix='.jpg', seg_map_suffix='.png',
                   data_prefix=dict(img_path='images/validation',
                                    seg_map_path='annotations/validation'))
    pairs = split_files(dataset, num=2)
    assert [p[0].name for p in pairs] == ['ADE_val_00000001.jpg', 'ADE_val_00000002.jpg']
    assert all(seg.name == img.name.replace('.jpg', '.png') and seg.is_file()
               for img, seg in pairs)
    with pytest.raises(FileNotFoundError):
        split_files(dict(dataset, data_root=str(tmp_path / 'nothing')))
