"""Instance segmentation of one large composed scene: streamed whole-image
Mask R-CNN against mmdet's sliced large-image inference; time, peak memory,
bbox and segm mAP.

Methods (each case in its own process, by :mod:`ufo_mm.benchmark.harness`
as the segmentation benchmark :mod:`ufo_mm.benchmark.large_image`'s: wall
and CPU seconds, the process's peak resident set, a memory watchdog):

- ``stream``: the scene in one pass through ``StreamingMaskRCNN`` (test mode
  ``'stream'``, masks as RLE), fed at its own size
  (``ufo_mm.streaming.detector.detect_large``);
- ``sliced``: mmdet's ``demo/large_image_demo.py``: sahi's ``slice_image``
  cuts overlapping patches, ``inference_detector`` predicts them (a batch at
  a time; mmdet 3.3 runs a batch's images one after another), mmdet's
  ``merge_results_by_nms`` shifts the boxes to the scene and merges them.
  Each patch's masks become RLE at scene coordinates as soon as the patch is
  predicted (:func:`paste_rle`): (N, H, W) bitmaps of the scene would not fit;
- ``whole``: unstreamed mmdet at the scene size (the config's own model and
  test mode), to show where it runs out of memory.

The scene (``ufo_mm.datasets.composed_scene.compose_coco``) pastes the
objects of the config's validation images, at their own pixel size, into a
``fraction`` of the grid cells of one object-free background, so objects keep
the scale the model was trained on; patches and the scene are fed at their
own size too (every ``Resize`` of the test pipeline targets the input's
size; the data preprocessor's padding stays). A larger input holds more
objects: the test_cfg's proposal and detection counts grow with the input's
area over the config's test scale (``ufo_mm.evaluation.highres.scale_test_cfg``:
``rcnn.max_per_img`` up to ``max_dets``, the RPN's ``nms_pre`` and
``max_per_img`` up to 4 x ``max_dets``, or as given). bbox and segm mAP by
pycocotools' COCOeval against the scene's ground truth. Each method gives
at most ``max_dets`` detections (sliced: the merged result's highest-scoring
``max_dets``, as ``rcnn.max_per_img`` caps a whole image), and COCOeval's
``maxDets`` (a cap per image and category; COCO's 100 would cut a scene of
hundreds of objects of a class) is ``max_dets`` too, so it cuts none of them.
``tools/benchmark_large_det.py`` is the command line.
"""
import copy
import json
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import harness
from .harness import measure_call

METHODS = ('stream', 'sliced', 'whole')
#: the case module the children run (its :func:`run_case`)
CASE_MODULE = 'ufo_mm.benchmark.large_detection'
#: what a case runs with unless told (``tools/benchmark_large_det.py``'s defaults)
OPTIONS = dict(fraction=0.25, seed=0, max_dets=3000, rpn_nms_pre=None, rpn_max_per_img=None,
               patch_size=512, overlap_ratio=0.25, merge_iou_thr=0.25, batch_size=4,
               band_rows=None, tokens_per_band=None, token_dtype=None, cfg_options=None)
STREAM_MODEL = 'StreamingMaskRCNN'


def check_options(methods: Sequence[str], sides: Sequence[int], threads: int = 1,
                  config: Optional[str] = None, checkpoint: Optional[str] = None,
                  **options) -> None:
    """Raise ValueError (or FileNotFoundError) naming the first bad argument of a run."""
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f'methods must be some of {", ".join(METHODS)}, got {list(methods)}')
    if not sides or any(s <= 0 for s in sides):
        raise ValueError(f'scene sides must be positive, got {list(sides)}')
    if threads < 1:
        raise ValueError(f'threads must be at least 1, got {threads}')
    opts = dict(OPTIONS, **options)
    for key in ('max_dets', 'patch_size', 'batch_size'):
        if opts[key] < 1:
            raise ValueError(f'{key} must be at least 1, got {opts[key]}')
    for key in ('rpn_nms_pre', 'rpn_max_per_img', 'band_rows', 'tokens_per_band'):
        if opts[key] is not None and opts[key] < 1:
            raise ValueError(f'{key} must be at least 1, got {opts[key]}')
    if not 0 <= opts['overlap_ratio'] < 1:
        raise ValueError(f'overlap_ratio must be in [0, 1), got {opts["overlap_ratio"]}')
    if not 0 < opts['merge_iou_thr'] <= 1:
        raise ValueError(f'merge_iou_thr must be in (0, 1], got {opts["merge_iou_thr"]}')
    if not 0 < opts['fraction'] <= 1:
        raise ValueError(f'fraction (of grid cells with objects) must be in (0, 1], '
                         f'got {opts["fraction"]}')
    for name, path in (('config', config), ('checkpoint', checkpoint)):
        if path is not None and not osp.isfile(path):
            raise FileNotFoundError(f'{name} {path} does not exist')
    if 'sliced' in methods:
        try:
            import sahi.slicing  # noqa: F401
        except ImportError as e:
            raise ValueError('method sliced needs sahi (extra [bench]): pip install --no-deps '
                             f'sahi, at the version of requirements/constraints.txt ({e})'
                             ) from None


def plan_cases(methods: Sequence[str], sides: Sequence[int], threads: int, config: str,
               checkpoint: str, **options) -> List[dict]:
    """One case per method and side (sides ascending, so a method's larger
    sides are skipped once it failed), each carrying every option it runs with."""
    opts = dict(OPTIONS, **options)
    return [dict(method=m, side=s, threads=threads, config=osp.abspath(config),
                 checkpoint=osp.abspath(checkpoint), **opts)
            for m in methods for s in sorted(sides)]


def detector_config(cfg, case: dict, input_hw: Tuple[int, int]):
    """(model config, test pipeline) for inputs of ``input_hw`` (the scene, or
    one patch): counts scaled with the area, Resize to the input's own size;
    ``stream``: ``StreamingMaskRCNN`` in test mode 'stream' with RLE masks,
    else the config's model in mmdet's own test mode (bitmap masks)."""
    from ufo_mm.evaluation.highres import keep_size_pipeline, pipeline_scale, scale_test_cfg
    cfg = copy.deepcopy(cfg)
    ref = pipeline_scale(cfg.test_dataloader.dataset.pipeline)
    factor = input_hw[0] * input_hw[1] / (ref[0] * ref[1]) if ref else 1.0
    test_cfg = cfg.model.test_cfg
    scale_test_cfg(test_cfg, factor, case['max_dets'])
    for key in ('nms_pre', 'max_per_img'):
        if case[f'rpn_{key}'] is not None:
            test_cfg.rpn[key] = case[f'rpn_{key}']
    if case['method'] == 'stream':
        cfg.model.type = STREAM_MODEL
        test_cfg.update(mode='stream', mask_format='rle')
        test_cfg.update({k: case[k] for k in ('band_rows', 'tokens_per_band', 'token_dtype')
                         if case[k] is not None})
    elif cfg.model.type == STREAM_MODEL:  # a streaming config, run the way mmdet runs
        test_cfg.mode = 'whole'
    return cfg, keep_size_pipeline(cfg.test_dataloader.dataset.pipeline, input_hw)


def paste_rle(mask, offset_xy: Sequence[int], scene_hw: Sequence[int]) -> dict:
    """pycocotools' compressed RLE of a (h, w) bool mask whose top-left pixel
    lies at ``offset_xy`` = (x, y) of an (H, W) scene, by the streamed
    detector's :func:`~ufo_mm.streaming.detector.column_strip_rle`: only an
    (H, columns the mask's pixels span) strip is made, never a scene-size array."""
    from ufo_mm.streaming.detector import column_strip_rle
    H, W = map(int, scene_hw)
    x, y = map(int, offset_xy)
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    if x < 0 or y < 0 or x + w > W or y + h > H:
        raise ValueError(f'a {h}x{w} mask at (x={x}, y={y}) is not inside the {H}x{W} scene')
    cols = np.flatnonzero(mask.any(0))
    c0, c1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
    return column_strip_rle(mask[:, c0:c1], slice(y, y + h), slice(x + c0, x + c1), H, W)


def scene_instances(result, offset_xy, scene_hw, rles: list):
    """One patch's DetDataSample with its masks moved out: each appended to
    ``rles`` as RLE at scene coordinates, ``pred_instances.rle_index`` where."""
    from mmengine.structures import InstanceData
    pred = result.pred_instances
    n = len(pred)
    kept = InstanceData(bboxes=pred.bboxes, scores=pred.scores, labels=pred.labels)
    if 'masks' in pred:
        import torch
        kept.rle_index = torch.arange(len(rles), len(rles) + n)
        rles.extend(paste_rle(m, offset_xy, scene_hw) for m in pred.masks.cpu().numpy())
    result.pred_instances = kept
    return result


def merge_patches(results: list, offsets, scene_hw, rles: list, iou_thr: float):
    """mmdet's ``merge_results_by_nms`` of the patch results (boxes shifted
    by each patch's offset, class-wise NMS at ``iou_thr``), the masks of
    what it kept taken from ``rles`` (:func:`scene_instances`): the scene's
    InstanceData. Patches without detections are left out of the merge
    (sahi's ``shift_bboxes`` makes their (0, 4) boxes a (0,) tensor, which
    ``InstanceData.cat`` cannot join)."""
    from mmdet.utils.large_image import merge_results_by_nms
    found = [(r, o) for r, o in zip(results, offsets) if len(r.pred_instances)]
    if not found:
        pred = results[0].pred_instances
    else:
        merged = merge_results_by_nms([r for r, _ in found], [o for _, o in found],
                                      src_image_shape=tuple(scene_hw),
                                      nms_cfg=dict(type='nms', iou_threshold=iou_thr))
        pred = merged.pred_instances
    if 'rle_index' in pred:
        index = pred.rle_index.tolist()
        del pred.rle_index
        pred.masks = [rles[i] for i in index]
    return pred


def detect_sliced(model, image_bgr: np.ndarray, pipeline, case: dict):
    """mmdet's large-image demo on one (H, W, 3) BGR scene: the scene's
    InstanceData (masks as RLE; its ``max_dets`` highest-scoring detections)
    and dict(patches=, merged_detections=: how many the merge gave)."""
    from mmdet.apis import inference_detector
    from sahi.slicing import slice_image
    sliced = slice_image(image_bgr, slice_height=case['patch_size'],
                         slice_width=case['patch_size'], auto_slice_resolution=False,
                         overlap_height_ratio=case['overlap_ratio'],
                         overlap_width_ratio=case['overlap_ratio'])
    scene_hw = image_bgr.shape[:2]
    offsets = sliced.starting_pixels
    results, rles, step = [], [], case['batch_size']
    for start in range(0, len(sliced), step):
        batch = sliced.images[start:start + step]
        for result, offset in zip(inference_detector(model, batch, test_pipeline=pipeline),
                                  offsets[start:start + step]):
            results.append(scene_instances(result, offset, scene_hw, rles))
    pred = merge_patches(results, offsets, scene_hw, rles, case['merge_iou_thr'])
    merged = len(pred)
    if merged > case['max_dets']:
        pred = pred[pred.scores.argsort(descending=True)[:case['max_dets']]]
    return pred, dict(patches=len(sliced), merged_detections=merged)


def detect_streamed(model, image_bgr: np.ndarray, case: dict):
    """The scene's InstanceData (masks as RLE) in one streamed pass:
    :func:`ufo_mm.streaming.detector.detect_large`, which normalises the
    image band by band (no float copy of the scene either)."""
    from ufo_mm.streaming.backbone import TOKENS_PER_BAND
    from ufo_mm.streaming.detector import detect_large
    from ufo_mm.streaming.inputs import token_dtype
    return detect_large(model, image_bgr, band_rows=case['band_rows'],
                        tokens_per_band=case['tokens_per_band'] or TOKENS_PER_BAND,
                        token_dtype=token_dtype(case['token_dtype']))


def run_case(case: dict) -> dict:
    """Measure one case in this process: its row (the case, status, seconds,
    CPU seconds, peak and ready RSS, objects, detections, bbox/segm mAP)."""
    import torch
    from mmdet.apis import inference_detector
    from mmengine.dataset import Compose

    from ufo_mm.builder import build_model, load_config
    from ufo_mm.evaluation.highres import load_input
    from ufo_mm.evaluation.metrics import coco_detections, coco_eval

    torch.set_num_threads(case['threads'])
    cfg = load_config(case['config'], case['cfg_options'])
    image, gt, _ = load_input(cfg, case['side'], tile_fraction=case['fraction'],
                              seed=case['seed'])
    image_bgr = np.ascontiguousarray(image[..., ::-1])
    del image
    side = case['side']
    input_hw = (min(case['patch_size'], side),) * 2 if case['method'] == 'sliced' else \
        (side, side)
    cfg, pipeline = detector_config(cfg, case, input_hw)
    model = build_model(cfg, case['checkpoint'])
    pipeline = Compose(pipeline)
    extra = {}

    def detect():
        if case['method'] == 'stream':
            return detect_streamed(model, image_bgr, case)
        if case['method'] == 'sliced':
            pred, counts = detect_sliced(model, image_bgr, pipeline, case)
            extra.update(counts)
            return pred
        return inference_detector(model, image_bgr, test_pipeline=pipeline).pred_instances
    pred, measured = measure_call(detect)
    name_to_id = {c['name']: c['id'] for c in gt['categories']}
    cat_ids = [name_to_id[c] for c in model.dataset_meta['classes']]
    iou_types = ('bbox', 'segm') if 'masks' in pred else ('bbox',)
    metrics = coco_eval(gt, coco_detections(pred, cat_ids), iou_types, case['max_dets'])
    return dict(case, status='ok', **measured, **extra, objects=len(gt['annotations']),
                detections=len(pred), **{k: round(v, 4) for k, v in metrics.items()})


def run_cases(cases: List[dict], mem_limit_gb: float, timeout_s: float,
              log=print) -> List[dict]:
    """Each case in its own watched process, in order
    (:func:`ufo_mm.benchmark.harness.run_cases`); a method's larger sides are
    skipped once it failed."""
    return harness.run_cases(CASE_MODULE, cases, mem_limit_gb, timeout_s,
                             series=lambda c: c['method'], log=log)


def markdown(rows: List[dict]) -> str:
    lines = ['| method | side | objects | detections | seconds | CPU seconds | peak RSS (GiB) | '
             'bbox mAP | segm mAP | patches |', '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        if r['status'] != 'ok':
            peak = r.get('peak_rss_gb', '')
            lines.append(f"| {r['method']} | {r['side']} | | | {r['status']} | | {peak} "
                         f"| | | |")
            continue
        segm = f"{r['segm_mAP']:.3f}" if 'segm_mAP' in r else ''
        lines.append(f"| {r['method']} | {r['side']} | {r['objects']} | {r['detections']} | "
                     f"{r['seconds']:.1f} | {r['cpu_seconds']} | {r['peak_rss_gb']:.2f} | "
                     f"{r['bbox_mAP']:.3f} | {segm} | {r.get('patches', '')} |")
    return '\n'.join(lines)


def write_outputs(rows: List[dict], out_dir: str, title: str) -> None:
    """``large_detection.json`` (the rows) and ``large_detection.md`` (the table)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'large_detection.json'), 'w') as f:
        json.dump(rows, f, indent=1)
    with open(osp.join(out_dir, 'large_detection.md'), 'w') as f:
        f.write(f'{title}\n\n{markdown(rows)}\n')
