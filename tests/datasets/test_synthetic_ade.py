"""Tests of ufo_mm.datasets.synthetic_ade: layout, determinism, label values, mmseg loading."""
import cv2
import numpy as np
import pytest

from ufo_mm.datasets import ADE_CLASSES, ADE_PALETTE, make_ade20k
from ufo_mm.datasets.shapes import TEXTURES

SIZE_HW = (64, 96)  # non-square on purpose
SPLITS = (('training', 'train', 6), ('validation', 'val', 3))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_ade20k(tmp_path_factory.mktemp('ade'), num_train=6, num_val=3,
                       img_size=SIZE_HW, seed=0)


def read_labels(data_root, folder):
    paths = sorted((data_root / 'annotations' / folder).glob('*.png'))
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]


def ade_kwargs(data_root, folder):
    return dict(data_root=str(data_root),
                data_prefix=dict(img_path=f'images/{folder}', seg_map_path=f'annotations/{folder}'))


def test_layout_and_label_values(data_root):
    assert data_root.name == 'ADEChallengeData2016'
    assert len(ADE_PALETTE) == len(ADE_CLASSES)
    for folder, prefix, num in SPLITS:
        names = [f'ADE_{prefix}_{i:08d}' for i in range(1, num + 1)]
        images = sorted((data_root / 'images' / folder).glob('*.jpg'))
        assert [p.stem for p in images] == names
        assert [p.stem for p in sorted((data_root / 'annotations' / folder).glob('*.png'))] == names
        assert all(cv2.imread(str(p)).shape == (*SIZE_HW, 3) for p in images)
        for label in read_labels(data_root, folder):
            assert label.dtype == np.uint8 and label.shape == SIZE_HW
            assert label.max() <= len(ADE_CLASSES)
    values = np.unique(np.concatenate([lab.ravel() for lab in read_labels(data_root, 'training')]))
    assert values.min() <= len(TEXTURES) < values.max()  # both texture and shape classes occur


def test_deterministic_from_seed(tmp_path):
    roots = [make_ade20k(tmp_path / name, 2, 1, img_size=64, seed=seed, val_seed=val_seed)
             for name, seed, val_seed in (('a', 5, None), ('b', 5, None), ('c', 6, 5))]
    train_img = 'images/training/ADE_train_00000001.jpg'
    train_seg = 'annotations/training/ADE_train_00000001.png'
    val_seg = 'annotations/validation/ADE_val_00000001.png'
    for rel in (train_img, train_seg, val_seg):
        assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes()
    assert (roots[0] / train_img).read_bytes() != (roots[2] / train_img).read_bytes()
    # default val_seed differs from seed; an explicit val_seed equal to a train seed repeats it
    assert (roots[0] / val_seg).read_bytes() != (roots[0] / train_seg).read_bytes()
    assert (roots[2] / val_seg).read_bytes() == (roots[0] / train_seg).read_bytes()


def test_mmseg_ade20k_dataset_loads(data_root):
    from mmseg.datasets import ADE20KDataset

    for folder, _, num in SPLITS:
        dataset = ADE20KDataset(**ade_kwargs(data_root, folder), pipeline=[])
        assert len(dataset) == num and dataset.reduce_zero_label
        info = dataset.get_data_info(0)
        assert info['seg_map_path'].endswith('.png') and info['img_path'].endswith('.jpg')


def load_with_our_classes(data_root, folder):
    """mmseg's ADE20KDataset only accepts subsets of its 150 names, so custom classes use
    BaseSegDataset with ADE20K's settings (what the synthetic configs do)."""
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations

    return BaseSegDataset(
        **ade_kwargs(data_root, folder), img_suffix='.jpg', seg_map_suffix='.png',
        reduce_zero_label=True, metainfo=dict(classes=ADE_CLASSES, palette=ADE_PALETTE),
        pipeline=[dict(type=LoadImageFromFile), dict(type=LoadAnnotations)])


def test_reduce_zero_label_maps_other_to_ignore(data_root):
    dataset = load_with_our_classes(data_root, 'training')
    assert dataset.metainfo['classes'] == ADE_CLASSES
    sample = dataset[0]
    raw = read_labels(data_root, 'training')[0]
    assert sample['img'].shape == (*SIZE_HW, 3)
    np.testing.assert_array_equal(sample['gt_seg_map'], np.where(raw == 0, 255, raw - 1))


def test_iou_metric_of_ground_truth_is_perfect(data_root):
    import torch
    from mmseg.evaluation import IoUMetric

    dataset = load_with_our_classes(data_root, 'validation')
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        seg = torch.from_numpy(dataset[i]['gt_seg_map'].astype(np.int64))[None]
        metric.process({}, [dict(pred_sem_seg=dict(data=seg), gt_sem_seg=dict(data=seg))])
    assert metric.evaluate(size=len(dataset))['mIoU'] == pytest.approx(100.0)
