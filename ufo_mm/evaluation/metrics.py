"""Metrics of one prediction on one image: COCO bbox/segm mAP (pycocotools) and
mIoU (mmseg's convention), for composed high-resolution scenes."""
import copy

import numpy as np


def coco_map(gt: dict, result, classes, with_masks: bool) -> dict:
    """bbox (and segm) mAP of one prediction on a composed image, by pycocotools."""
    import pycocotools.mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    name_to_id = {c['name']: c['id'] for c in gt['categories']}
    cat_ids = [name_to_id[c] for c in classes]
    pred = result.pred_instances
    boxes = pred.bboxes.numpy()
    dets = []
    for i in range(len(boxes)):
        x1, y1, x2, y2 = boxes[i].tolist()
        d = dict(image_id=1, category_id=cat_ids[int(pred.labels[i])],
                 bbox=[x1, y1, x2 - x1, y2 - y1], score=float(pred.scores[i]))
        if with_masks:
            rle = mask_util.encode(np.asfortranarray(pred.masks[i].numpy().astype(np.uint8)))
            rle['counts'] = rle['counts'].decode()
            d['segmentation'] = rle
        dets.append(d)
    out = {}
    for iou_type in ('bbox', 'segm') if with_masks else ('bbox',):
        if not dets:
            out[f'{iou_type}_mAP'] = 0.0
            continue
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), iou_type)
        n = len(gt['annotations'])
        ev.params.maxDets = [max(100, n), max(300, 2 * n), max(1000, 4 * n)]
        ev.params.areaRngLbl = ['all']
        ev.params.areaRng = [[0, 1e10]]
        ev.evaluate()
        ev.accumulate()
        precision = ev.eval['precision'][:, :, :, 0, -1]  # T, R, K at the largest maxDets
        valid = precision[precision > -1]
        out[f'{iou_type}_mAP'] = float(valid.mean()) if valid.size else 0.0
    return out


def seg_miou(pred: np.ndarray, label: np.ndarray, num_classes: int,
             reduce_zero_label: bool) -> float:
    """mIoU over classes present in prediction or ground truth (mmseg's convention)."""
    label = label.astype(np.int64)
    if reduce_zero_label:
        label = np.where(label == 0, 255, label - 1)
    valid = label != 255
    p, g = pred[valid], label[valid]
    ious = []
    for c in range(num_classes):
        union = np.logical_or(p == c, g == c).sum()
        if union and (g == c).any():
            ious.append(np.logical_and(p == c, g == c).sum() / union)
    return float(np.mean(ious)) if ious else 0.0
