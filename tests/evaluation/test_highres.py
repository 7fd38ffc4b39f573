"""ufo_mm.evaluation.highres and .metrics: the keep-size test pipeline, the
detection counts scaled with the area, the results table, single-image mIoU,
COCO mAP of bitmap or RLE masks (whole runs:
tests/tools/test_det_tools.py::test_infer_highres_1024)."""
import numpy as np
import pytest
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


def test_coco_map_of_ground_truth_bitmaps_is_one():
    """coco_map on a DetDataSample whose (N, H, W) bitmaps and boxes are the
    ground truth; coco_detections keeps RLE masks (mask_format 'rle') as given."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from pycocotools import mask as mask_util

    from ufo_mm.evaluation.metrics import coco_detections, coco_map
    masks = np.zeros((2, 40, 50), bool)
    masks[0, 5:15, 10:30] = True
    masks[1, 20:38, 2:9] = True
    anns = [dict(id=i + 1, image_id=1, category_id=7 + i, bbox=b, area=float(m.sum()),
                 iscrowd=0, segmentation=[[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2],
                                           b[1] + b[3], b[0], b[1] + b[3]]])
            for i, (b, m) in enumerate(zip([[10, 5, 20, 10], [2, 20, 7, 18]], masks))]
    gt = dict(images=[dict(id=1, height=40, width=50)], annotations=anns,
              categories=[dict(id=7, name='a'), dict(id=8, name='b')])
    result = DetDataSample()
    result.pred_instances = InstanceData(
        bboxes=torch.tensor([[10., 5, 30, 15], [2, 20, 9, 38]]), scores=torch.tensor([.9, .8]),
        labels=torch.tensor([0, 1]), masks=torch.from_numpy(masks))
    assert coco_map(gt, result, ('a', 'b'), with_masks=True) == pytest.approx({
        'bbox_mAP': 1.0, 'bbox_mAP_50': 1.0, 'segm_mAP': 1.0, 'segm_mAP_50': 1.0})
    rles = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    result.pred_instances.masks = rles
    dets = coco_detections(result.pred_instances, [7, 8])
    assert [d['segmentation'] for d in dets] == rles and dets[1]['bbox'] == [2, 20, 7, 18]
