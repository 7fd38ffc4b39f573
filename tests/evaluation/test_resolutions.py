"""ufo_mm.evaluation.resolutions: the per-size config and the table (the test
loop itself runs in tests/tools/test_seg_tools.py)."""
from argparse import Namespace
from pathlib import Path

from mmengine.config import Config

from ufo_mm.evaluation.resolutions import (default_num_val, drop_resize, format_table,
                                           size_config)

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(2048, 512)),
            dict(type='LoadAnnotations'), dict(type='PackSegInputs')]


def args(**kw):
    return Namespace(**dict(dict(mode='whole', crop_size=None, stride=None, keep_resize=False,
                                 checkpoint='ckpt.pth'), **kw))


def config():
    return Config(dict(
        crop_size=(96, 96), model=dict(test_cfg=dict(mode='whole')),
        test_dataloader=dict(batch_size=4, num_workers=2, persistent_workers=True,
                             dataset=dict(data_root='data/x', pipeline=PIPELINE)),
        default_hooks=dict(visualization=dict(type='SegVisualizationHook', draw=True))))


def test_default_num_val_shrinks_with_size():
    assert [default_num_val(s) for s in (128, 256, 512, 1024, 2048, 8192)] == \
        [100, 100, 50, 25, 12, 10]


def test_drop_resize_keeps_the_rest():
    assert [t['type'] for t in drop_resize(PIPELINE)] == [
        'LoadImageFromFile', 'LoadAnnotations', 'PackSegInputs']


def test_size_config_tests_the_split_at_native_size(tmp_path):
    cfg = config()
    out = size_config(cfg, Path('/d/ADEChallengeData2016'), 256, args(), tmp_path)
    ds = out.test_dataloader.dataset
    assert ds.data_root == '/d/ADEChallengeData2016'
    assert ds.data_prefix == dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')
    assert 'Resize' not in [t['type'] for t in ds.pipeline] and out.test_pipeline == ds.pipeline
    assert (out.test_dataloader.batch_size, out.test_dataloader.num_workers) == (1, 0)
    assert out.model.test_cfg == dict(mode='whole') and out.load_from == 'ckpt.pth'
    assert out.work_dir == str(tmp_path / '256')
    assert cfg.test_dataloader.batch_size == 4  # the input config is not changed
    slide = size_config(cfg, Path('/d'), 256, args(mode='slide', keep_resize=True), tmp_path)
    assert slide.model.test_cfg == dict(mode='slide', crop_size=(96, 96), stride=(64, 64))
    assert 'Resize' in [t['type'] for t in slide.test_dataloader.dataset.pipeline]


def test_format_table_changes_against_the_reference_size():
    rows = [dict(size=128, images=2, mIoU=60.0, aAcc=90.0, seconds_per_image=0.1),
            dict(size=256, images=2, mIoU=55.5, aAcc=88.0, seconds_per_image=0.4)]
    lines = format_table(rows, 128).splitlines()
    assert lines[0] == '| size | images | mIoU | change vs 128 | aAcc | s/image |'
    assert lines[3] == '| 256 | 2 | 55.50 | -4.50 | 88.00 | 0.40 |'
