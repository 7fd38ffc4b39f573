"""Metrics of one prediction on one image: COCO bbox/segm mAP (pycocotools) and
mIoU (mmseg's convention), for composed high-resolution scenes."""
import copy

import numpy as np


def coco_detections(pred_instances, cat_ids, image_id: int = 1) -> list:
    """mmdet's ``pred_instances`` as COCO result dicts (xywh boxes); masks, when
    present, as RLE: a (N, H, W) bool tensor is encoded per instance, a list of
    RLE dicts (``mask_format='rle'``) is taken as it is. ``cat_ids[label]`` is
    the category id of a label."""
    import pycocotools.mask as mask_util
    boxes = pred_instances.bboxes.cpu().numpy()
    masks = pred_instances.masks if 'masks' in pred_instances else None
    dets = []
    for i in range(len(boxes)):
        x1, y1, x2, y2 = boxes[i].tolist()
        d = dict(image_id=image_id, category_id=cat_ids[int(pred_instances.labels[i])],
                 bbox=[x1, y1, x2 - x1, y2 - y1], score=float(pred_instances.scores[i]))
        if masks is not None:
            if isinstance(masks[i], dict):
                d['segmentation'] = masks[i]
            else:
                mask = masks[i].cpu().numpy() if hasattr(masks[i], 'cpu') else masks[i]
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle['counts'] = rle['counts'].decode()
                d['segmentation'] = rle
        dets.append(d)
    return dets


def coco_eval(gt: dict, dets: list, iou_types=('bbox', 'segm'), max_dets=None) -> dict:
    """``{iou_type}_mAP`` (IoU 0.50:0.95) and ``{iou_type}_mAP_50`` of COCO
    result dicts against a COCO ground truth, by pycocotools, over all object
    sizes. COCOeval's ``maxDets`` keeps the ``max_dets`` highest-scoring
    detections of each image and category; COCO's 100 would cut a scene
    with hundreds of objects of a class, so without ``max_dets`` it is
    max(1000, 4 x the objects)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    out = {}
    for iou_type in iou_types:
        if not dets:
            out.update({f'{iou_type}_mAP': 0.0, f'{iou_type}_mAP_50': 0.0})
            continue
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), iou_type)
        ev.params.maxDets = [max_dets or max(1000, 4 * len(gt['annotations']))]
        ev.params.areaRngLbl = ['all']
        ev.params.areaRng = [[0, 1e10]]
        ev.evaluate()
        ev.accumulate()
        precision = ev.eval['precision'][:, :, :, 0, -1]  # T, R, K at the one maxDets
        for key, p in ((f'{iou_type}_mAP', precision), (f'{iou_type}_mAP_50', precision[:1])):
            valid = p[p > -1]
            out[key] = float(valid.mean()) if valid.size else 0.0
    return out


def coco_map(gt: dict, result, classes, with_masks: bool) -> dict:
    """bbox (and segm) mAP of one prediction (a DetDataSample) on a composed image."""
    name_to_id = {c['name']: c['id'] for c in gt['categories']}
    dets = coco_detections(result.pred_instances, [name_to_id[c] for c in classes])
    return coco_eval(gt, dets, ('bbox', 'segm') if with_masks else ('bbox',))


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
