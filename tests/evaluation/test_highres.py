"""ufo_mm.evaluation.highres and .metrics: the keep-size test pipeline, the
detection counts scaled with the area, the results table and single-image mIoU
(whole runs: tests/tools/test_det_tools.py::test_infer_highres_1024)."""
import numpy as np
from mmengine.config import ConfigDict

from ufo_mm.evaluation.highres import (format_table, keep_size_pipeline, pipeline_scale,
                                       scale_test_cfg)
from ufo_mm.evaluation.metrics import seg_miou

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(1333, 800), keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True), dict(type='PackDetInputs')]


def test_pipeline_keeps_the_input_size():
    assert pipeline_scale(PIPELINE) == (1333, 800)
    assert pipeline_scale([dict(type='mmseg.Resize', scale=512)]) == (512, 512)
    assert pipeline_scale(PIPELINE[:1]) is None
    out = keep_size_pipeline(PIPELINE, (2048, 1024))
    assert out == [dict(type='mmdet.LoadImageFromNDArray'),
                   dict(type='Resize', scale=(1024, 2048), keep_ratio=True),
                   dict(type='PackDetInputs')]
    assert PIPELINE[1]['scale'] == (1333, 800)  # the config's pipeline is not changed
    with_gt = keep_size_pipeline(PIPELINE, (64, 64), scope='mmseg', with_gt=True)
    assert [t['type'] for t in with_gt][:3] == ['mmseg.LoadImageFromNDArray', 'Resize',
                                               'LoadAnnotations']


def test_detection_counts_grow_with_the_area_up_to_the_cap():
    test_cfg = ConfigDict(rpn=dict(nms_pre=1000, max_per_img=1000),
                          rcnn=dict(max_per_img=100, score_thr=0.05))
    scale_test_cfg(test_cfg, 4.0, max_dets=300)
    assert test_cfg.rpn == dict(nms_pre=1200, max_per_img=1200)  # 4 x max_dets caps the RPN
    assert test_cfg.rcnn.max_per_img == 300
    scale_test_cfg(test_cfg, 0.5, max_dets=300)  # never fewer than the config's
    assert test_cfg.rcnn.max_per_img == 300


def test_results_table_shows_the_columns_rows_have():
    rows = [dict(input='composed', height=256, width=256, seconds=1.5, peak_rss_mb=900.0,
                 bbox_mAP=0.51234, picture='x.jpg'),
            dict(input='composed', height=512, width=512, seconds=4.0, peak_rss_mb=1200.0)]
    assert format_table(rows) == ['input | height | width | seconds | peak_rss_mb | bbox_mAP',
                                  'composed | 256 | 256 | 1.5 | 900.0 | 0.512',
                                  'composed | 512 | 512 | 4.0 | 1200.0 | ']


def test_seg_miou_over_present_classes():
    label = np.array([[1, 2, 2, 0]])
    pred = np.array([[0, 0, 1, 1]])
    # reduce_zero_label: 0 is ignored, label i becomes i - 1; classes 0 and 1 each IoU 1/2
    assert seg_miou(pred, label, 3, reduce_zero_label=True) == 0.5
    # otherwise every prediction misses: classes 0, 1, 2 present in the labels, IoU 0
    assert seg_miou(pred, label, 3, reduce_zero_label=False) == 0.0
