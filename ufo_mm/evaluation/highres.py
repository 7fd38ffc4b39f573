"""A trained detector or segmentor on images far larger than it was trained on.

The same weights, no resizing: UFO-ViT computes its position encoding from the
token grid and its attention is linear in the number of tokens, so a model
trained on 128-px crops runs on a 2048x2048 image as it is. :func:`run_one`
predicts one input (an image file, or a scene composed from the config's
validation images by ``ufo_mm.datasets.composed_scene``), measures the
inference time and the process's peak memory, evaluates against the composed
ground truth (``ufo_mm.evaluation.metrics``) and draws the predictions.

The config's test pipeline would shrink the input (mmdet: ``Resize`` to
1333x800, mmseg: 2048x512): every ``Resize`` of the test pipeline targets the
input's own size instead (a no-op). Detection proposal and detection counts
(``test_cfg``) are scaled with the image area relative to the config's test
scale (capped by ``max_dets``), since a larger image holds more objects.
``tools/infer_highres.py`` is the command line (one subprocess per input, so
that every peak-memory figure belongs to one input).
"""
import copy
import os.path as osp
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from ufo_mm.analysis.process_stats import peak_rss_bytes, rss_bytes
from ufo_mm.builder import build_model, library_of, load_config

# the columns of the results table, in order (each shown when a row has it)
TABLE_KEYS = ('input', 'height', 'width', 'seconds', 'peak_rss_mb', 'inference_peak_mb',
              'objects', 'detections', 'bbox_mAP', 'segm_mAP', 'mIoU')


def pipeline_scale(pipeline):
    """(long, short) side of the first Resize of a test pipeline, or None."""
    for t in pipeline:
        if t['type'].split('.')[-1] == 'Resize' and 'scale' in t:
            scale = t['scale']
            scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
            return max(scale), min(scale)
    return None


def keep_size_pipeline(pipeline, size_hw, scope='mmdet', with_gt=False):
    """The test pipeline for an in-memory image kept at ``size_hw``: every
    Resize targets the image's own size (a no-op that still records
    scale_factor), annotations are not loaded."""
    h, w = size_hw
    out = []
    for t in copy.deepcopy(pipeline):
        kind = t['type'].split('.')[-1]
        if kind == 'LoadImageFromFile':
            t = dict(type=f'{scope}.LoadImageFromNDArray')
        elif kind == 'LoadAnnotations' and not with_gt:
            continue
        elif kind == 'Resize':
            t.pop('scale_factor', None)
            t.update(scale=(w, h), keep_ratio=True)
        out.append(t)
    return out


def scale_test_cfg(test_cfg, factor: float, max_dets: int):
    """More proposals and detections for a larger image (mmdet test_cfg, in place)."""
    def grow(d, key, cap):
        if key in d and d[key] > 0:
            d[key] = int(min(max(d[key], round(d[key] * factor)), cap))
    for part in (test_cfg.get('rpn'), test_cfg.get('rcnn'), test_cfg):
        if not part:
            continue
        grow(part, 'nms_pre', 4 * max_dets)
        grow(part, 'max_per_img', max_dets if part is not test_cfg.get('rpn') else 4 * max_dets)


def prepare_for_size(cfg, size_hw, score_thr: float, max_dets: int):
    """Config changes for one input size, made before the model is built:
    proposal/detection counts scaled with the area (mmdet) and the score
    threshold."""
    if library_of(cfg) != 'mmdet':
        return cfg
    ref = pipeline_scale(cfg.test_dataloader.dataset.pipeline)
    factor = size_hw[0] * size_hw[1] / (ref[0] * ref[1]) if ref else 1.0
    test_cfg = cfg.model.test_cfg
    scale_test_cfg(test_cfg, factor, max_dets)
    (test_cfg.rcnn if 'rcnn' in test_cfg else test_cfg).score_thr = score_thr
    return cfg


def dataset_paths(cfg):
    ds = cfg.test_dataloader.dataset
    root = ds.get('data_root', '') or ''
    prefix = ds.get('data_prefix', {})
    if library_of(cfg) == 'mmdet':
        ann = ds.ann_file if osp.isabs(ds.ann_file) else osp.join(root, ds.ann_file)
        return dict(ann_file=ann, img_dir=osp.join(root, prefix.get('img', '')))
    return dict(img_dir=osp.join(root, prefix.get('img_path', '')),
                ann_dir=osp.join(root, prefix.get('seg_map_path', '')),
                img_suffix=ds.get('img_suffix', '.jpg'),
                seg_map_suffix=ds.get('seg_map_suffix', '.png'))


def infer(cfg, model, image_rgb, repeat=1):
    """Predict one RGB image at its own size; returns (result, median seconds per run)."""
    from mmengine.dataset import Compose
    scope = library_of(cfg)
    pipeline = keep_size_pipeline(cfg.test_dataloader.dataset.pipeline, image_rgb.shape[:2],
                                  scope=scope)
    bgr = np.ascontiguousarray(image_rgb[..., ::-1])
    times = []
    if scope == 'mmdet':
        from mmdet.apis import inference_detector
        pipeline = Compose(pipeline)
        for _ in range(repeat):
            t = time.perf_counter()
            result = inference_detector(model, bgr, test_pipeline=pipeline)
            times.append(time.perf_counter() - t)
    else:
        from mmseg.apis import inference_model
        for _ in range(repeat):
            model.cfg.test_pipeline = copy.deepcopy(pipeline)
            t = time.perf_counter()
            result = inference_model(model, bgr)
            times.append(time.perf_counter() - t)
    return result, float(np.median(times))


def load_input(cfg, size: Optional[int] = None, image_path: Optional[str] = None,
               tile_fraction: Optional[float] = None, seed: int = 0):
    """(RGB image, composed ground truth or None, picture stem): the image file,
    else a ``size`` x ``size`` scene composed from the config's validation split
    (a ``tile_fraction`` of its cells filled: default 0.25 for detection, 1.0
    for segmentation)."""
    import cv2

    from ufo_mm.datasets.composed_scene import compose_coco, compose_seg
    if image_path:
        image = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(image_path)
        return image[..., ::-1], None, Path(image_path).stem
    paths = dataset_paths(cfg)
    hw = (size, size)
    if library_of(cfg) == 'mmdet':
        image, gt = compose_coco(paths['ann_file'], paths['img_dir'], hw,
                                 fraction=tile_fraction or 0.25, seed=seed)
    else:
        image, gt = compose_seg(paths['img_dir'], paths['ann_dir'], hw,
                                paths['img_suffix'], paths['seg_map_suffix'],
                                fraction=tile_fraction or 1.0, seed=seed)
    return image, gt, f'composed_{size}x{size}'


def run_one(config, checkpoint: str, out_dir, size: Optional[int] = None,
            image_path: Optional[str] = None, cfg_options: Optional[dict] = None,
            tile_fraction: Optional[float] = None, seed: int = 0, score_thr: float = 0.3,
            max_dets: int = 1000, repeat: int = 1, device: str = 'cpu') -> dict:
    """Everything for one input, in this process: the row of the results table
    (size, seconds, peak RSS, metrics against the composed ground truth) with
    the path of the picture written to ``out_dir``."""
    from ufo_mm.evaluation.metrics import coco_map, seg_miou
    from ufo_mm.visualization.predictions import draw_prediction
    cfg = load_config(config, cfg_options)
    image, gt, stem = load_input(cfg, size, image_path, tile_fraction, seed)
    model = build_model(prepare_for_size(cfg, image.shape[:2], score_thr, max_dets), checkpoint,
                        device)
    base_peak, base_rss = peak_rss_bytes() / 2**20, rss_bytes() / 2**20
    result, seconds = infer(cfg, model, image, repeat)
    peak = peak_rss_bytes() / 2**20
    row = dict(input=image_path or 'composed', height=int(image.shape[0]),
               width=int(image.shape[1]), seconds=round(seconds, 3),
               peak_rss_mb=round(peak, 1), rss_before_mb=round(base_rss, 1),
               inference_peak_mb=round(max(0.0, peak - base_rss), 1))
    if base_peak > peak - 1:
        row['note'] = 'peak reached before inference (model loading)'
    if library_of(cfg) == 'mmdet':
        pred = result.pred_instances
        row['detections'] = int((pred.scores >= score_thr).sum())
        if gt is not None:
            row['objects'] = len(gt['annotations'])
            row.update(coco_map(gt, result, model.dataset_meta['classes'], 'masks' in pred))
    else:
        pred = result.pred_sem_seg.data[0].cpu().numpy()
        if gt is not None:
            ds = cfg.test_dataloader.dataset
            row['mIoU'] = seg_miou(pred, gt, len(model.dataset_meta['classes']),
                                   bool(ds.get('reduce_zero_label', False)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f'{stem}_pred.jpg'
    draw_prediction(model, image, result, out_file, score_thr)
    row['picture'] = str(out_file)
    return row


def format_table(rows) -> List[str]:
    """The results as ' | '-separated lines: a header of the :data:`TABLE_KEYS`
    any row has, then one line per row (metrics to 3 decimals)."""
    keys = [k for k in TABLE_KEYS if any(k in r for r in rows)]
    lines = [' | '.join(keys)]
    for r in rows:
        lines.append(' | '.join(f'{r[k]:.3f}' if isinstance(r.get(k), float)
                                and k.endswith(('mAP', 'mIoU')) else str(r.get(k, ''))
                                for k in keys))
    return lines
