"""Tests of ufo_mm.datasets.synthetic_imagenet: ImageNet's folder layout and meta
lists, balanced labels, determinism from the seeds, errors, mmpretrain loading."""
import cv2
import numpy as np
import pytest

from ufo_mm.datasets import IMAGENET_CLASSES, make_imagenet
from ufo_mm.datasets.shapes import SHAPES

SIZE_HW = (48, 64)  # non-square on purpose


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_imagenet(tmp_path_factory.mktemp('inet'), num_train=12, num_val=7,
                         img_size=SIZE_HW)


def meta(root, split):
    return [line.rsplit(' ', 1) for line in (root / 'meta' / f'{split}.txt').read_text().splitlines()]


@pytest.mark.parametrize('split, num, stem', [('train', 12, '{cls}_{i:08d}'),
                                              ('val', 7, 'ILSVRC2012_val_{i:08d}')])
def test_layout_meta_and_balanced_labels(root, split, num, stem):
    assert IMAGENET_CLASSES == SHAPES  # the dense demos' objects
    entries = meta(root, split)
    assert len(entries) == num
    for i, (rel, label) in enumerate(entries, 1):
        label = int(label)
        cls = IMAGENET_CLASSES[label]
        assert label == (i - 1) % len(IMAGENET_CLASSES)
        assert rel == f'{cls}/' + stem.format(cls=cls, i=i) + '.JPEG'
        img = cv2.imread(str(root / split / rel))
        assert img is not None and img.shape == (*SIZE_HW, 3)
    files = sorted(p.relative_to(root / split).as_posix() for p in (root / split).rglob('*.JPEG'))
    assert files == sorted(rel for rel, _ in entries)


def test_deterministic_from_seed_and_val_seed_apart(tmp_path):
    a, b, c = (make_imagenet(tmp_path / n, 2, 2, seed=s, val_seed=v)
               for n, s, v in (('a', 3, None), ('b', 3, None), ('c', 4, 3)))
    train = 'train/circle/circle_00000001.JPEG'
    val = 'val/circle/ILSVRC2012_val_00000001.JPEG'
    assert (a / train).read_bytes() == (b / train).read_bytes()
    assert (a / train).read_bytes() != (c / train).read_bytes()
    assert (a / val).read_bytes() != (a / train).read_bytes()  # val from seed + 1000
    # an explicit val_seed equal to a training seed draws the same geometry and colours
    va, tr = (cv2.imread(str(p)).astype(int) for p in (c / val, a / train))
    assert np.abs(va - tr).max() <= 2  # JPEG file names differ, pixels do not


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_train must be an int >= 0'):
        make_imagenet(tmp_path, -1, 1)
    with pytest.raises(ValueError, match='size_range'):
        make_imagenet(tmp_path, 1, 1, size_range=(0.5, 1.5))
    with pytest.raises(ValueError, match='at least 32'):
        make_imagenet(tmp_path, 1, 1, img_size=16)


def test_mmpretrain_imagenet_dataset_reads_it(root):
    pytest.importorskip('mmpretrain', reason='mmpretrain is not installed (needs torchvision)')
    from mmpretrain.datasets import CustomDataset, ImageNet
    for split, num in (('train', 12), ('val', 7)):
        ds = ImageNet(data_root=str(root), split=split, metainfo=dict(classes=IMAGENET_CLASSES))
        assert len(ds) == num and ds.metainfo['classes'] == IMAGENET_CLASSES
        for i in range(num):
            info = ds.get_data_info(i)
            assert f'/{IMAGENET_CLASSES[info["gt_label"]]}/' in info['img_path']
    # the folders alone (no meta lists) give the same samples
    folders = CustomDataset(data_root=str(root), data_prefix='val', with_label=True)
    assert sorted(folders.metainfo['classes']) == sorted(IMAGENET_CLASSES)
    assert len(folders) == 7
