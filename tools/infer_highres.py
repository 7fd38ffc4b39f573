"""Run a trained detector or segmentor on images far larger than it was trained on.

The same weights, no resizing: UFO-ViT computes its position encoding from the
token grid and its attention is linear in the number of tokens, so a model
trained on 128-px crops runs on a 2048x2048 image as it is. The tool reports
the inference time and the process's peak memory (RSS high-water mark) and
draws the predictions (mmdet's ``DetLocalVisualizer`` / mmseg's
``SegLocalVisualizer``).

Inputs, either
  * ``--images A.jpg B.png ...``: your images, each at its own size; or
  * (default) a composed image per ``--sizes`` entry, built from the config's
    validation images, which keep their pixel size (objects stay at the scale
    the model was trained on). Detection: the objects of validation images
    (their visible-mask pixels) pasted into grid cells of one continuous
    object-free synthetic background; segmentation: whole validation images
    tiled on the grid. The composed ground truth gives bbox/segm mAP
    (detection, pycocotools) or mIoU (segmentation) at that size.

Each size runs in its own subprocess, so every peak-memory figure belongs to
one size only.

Examples::

    python tools/infer_highres.py configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py \\
        work_dirs/mask-rcnn_ufo-vit-demo_synthetic/iter_3000.pth --sizes 512 1024 2048
    python tools/infer_highres.py CONFIG CKPT --images big_photo.jpg --out-dir work_dirs/highres

The config's test pipeline would shrink the input (mmdet: ``Resize`` to
1333x800, mmseg: 2048x512); the tool replaces every ``Resize`` of the test
pipeline by one to the input's own size (a no-op). Detection proposal and
detection counts (``test_cfg``) are scaled with the image area relative to the
config's test scale (``--max-dets`` caps them), since a larger image holds
more objects.
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


# ----------------------------------------------------------------------------- memory / timing
def peak_rss_mb() -> float:
    """This process's resident-set high-water mark in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident set now, in MiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


# ----------------------------------------------------------------------------- composition
def grid_cells(size_hw, tile_hw, fraction, rng):
    """Top-left corners of the grid cells that get a tile (a random ``fraction`` of them)."""
    (H, W), (th, tw) = size_hw, tile_hw
    cells = [(y, x) for y in range(0, H - th + 1, th) for x in range(0, W - tw + 1, tw)]
    if not cells:
        raise ValueError(f'image {H}x{W} is smaller than one {th}x{tw} tile')
    k = max(1, int(round(fraction * len(cells))))
    chosen = sorted(rng.choice(len(cells), size=k, replace=False).tolist())
    return [cells[i] for i in chosen]


def background(size_hw, rng):
    """Object-free synthetic background (the datasets' own texture + noise), RGB uint8."""
    from ufo_mm.datasets.shapes import add_noise, clutter_background
    return add_noise(rng, clutter_background(rng, size_hw))


def compose_coco(ann_file, img_dir, size_hw, fraction=0.25, seed=0):
    """Paste the objects of COCO images, at their own pixel size, onto one ``size_hw`` scene.

    Returns ``(rgb (H, W, 3) uint8, coco_gt dict in COCO format with one image)``.
    The scene is one continuous object-free background of the datasets' own kind
    (texture + noise); the grid cells chosen (a ``fraction`` of them) each get the
    objects of the next image in file order, cycling: only the pixels of their
    visible masks, so no tile edge turns a patch of background into a square
    "object". All images must share one size (the cell size).
    """
    import cv2
    from pycocotools import mask as mask_utils
    ann = json.loads(Path(ann_file).read_text())
    images = ann['images']
    by_image = {}
    for a in ann['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    th, tw = images[0]['height'], images[0]['width']
    rng = np.random.default_rng(seed)
    chosen = grid_cells(size_hw, (th, tw), fraction, rng)
    H, W = size_hw
    canvas = background((H, W), rng)
    annotations = []
    for n, (y, x) in enumerate(chosen):
        info = images[n % len(images)]
        if (info['height'], info['width']) != (th, tw):
            raise ValueError('compose_coco needs images of one size; '
                             f"{info['file_name']} is {info['height']}x{info['width']}")
        tile = cv2.imread(str(Path(img_dir) / info['file_name']), cv2.IMREAD_COLOR)[..., ::-1]
        cell = canvas[y:y + th, x:x + tw]
        for a in by_image.get(info['id'], []):
            rle = mask_utils.merge(mask_utils.frPyObjects(a['segmentation'], th, tw))
            visible = mask_utils.decode(rle).astype(bool)
            cell[visible] = tile[visible]
            bx, by, bw, bh = a['bbox']
            seg = [[v + (x if i % 2 == 0 else y) for i, v in enumerate(poly)]
                   for poly in a['segmentation']]
            annotations.append(dict(id=len(annotations) + 1, image_id=1,
                                    category_id=a['category_id'], bbox=[bx + x, by + y, bw, bh],
                                    area=a['area'], iscrowd=a.get('iscrowd', 0),
                                    segmentation=seg))
    gt = dict(images=[dict(id=1, file_name='composed.jpg', height=H, width=W)],
              annotations=annotations, categories=ann['categories'])
    return canvas, gt


def compose_seg(img_dir, ann_dir, size_hw, img_suffix='.jpg', seg_map_suffix='.png',
                fraction=1.0, seed=0):
    """Tile segmentation images and label maps into one ``size_hw`` image.

    Returns ``(rgb (H, W, 3) uint8, label map (H, W) uint8)``; cells without a
    tile (``fraction`` < 1) and leftover strips are labelled 0 ('other').
    """
    import cv2
    names = sorted(p.name[:-len(img_suffix)] for p in Path(img_dir).glob(f'*{img_suffix}'))
    if not names:
        raise FileNotFoundError(f'no *{img_suffix} images in {img_dir}')
    first = cv2.imread(str(Path(img_dir) / (names[0] + img_suffix)))
    th, tw = first.shape[:2]
    rng = np.random.default_rng(seed)
    chosen = grid_cells(size_hw, (th, tw), fraction, rng)
    H, W = size_hw
    canvas = background(size_hw, rng)
    labels = np.zeros((H, W), np.uint8)
    for n, (y, x) in enumerate(chosen):
        name = names[n % len(names)]
        tile = cv2.imread(str(Path(img_dir) / (name + img_suffix)), cv2.IMREAD_COLOR)
        label = cv2.imread(str(Path(ann_dir) / (name + seg_map_suffix)), cv2.IMREAD_UNCHANGED)
        if tile.shape[:2] != (th, tw):
            raise ValueError(f'compose_seg needs tiles of one size; {name} is {tile.shape[:2]}')
        canvas[y:y + th, x:x + tw] = tile[..., ::-1]
        labels[y:y + th, x:x + tw] = label
    return canvas, labels


# ----------------------------------------------------------------------------- configs
def library_of(cfg) -> str:
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f"config default_scope must be 'mmdet' or 'mmseg', got {scope!r}")
    return scope


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


# ----------------------------------------------------------------------------- metrics
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


# ----------------------------------------------------------------------------- running
def load_config(config, cfg_options=None):
    from mmengine.config import Config

    import ufo_mm  # noqa: F401  registers UFOViT
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    library_of(cfg)
    return cfg


def build_model(cfg, checkpoint, device):
    """The mmdet/mmseg model with its weights; SyncBN becomes BN (one process)."""
    from mmengine.model import revert_sync_batchnorm
    if library_of(cfg) == 'mmdet':
        from mmdet.apis import init_detector
        model = init_detector(cfg, checkpoint, device=device)
    else:
        from mmseg.apis import init_model
        model = init_model(cfg, checkpoint, device=device)
    return revert_sync_batchnorm(model)


def prepare_for_size(cfg, size_hw, args):
    """Config changes for one input size, made before the model is built:
    proposal/detection counts scaled with the area (mmdet) and the score
    threshold."""
    if library_of(cfg) != 'mmdet':
        return cfg
    ref = pipeline_scale(cfg.test_dataloader.dataset.pipeline)
    factor = size_hw[0] * size_hw[1] / (ref[0] * ref[1]) if ref else 1.0
    test_cfg = cfg.model.test_cfg
    scale_test_cfg(test_cfg, factor, args.max_dets)
    (test_cfg.rcnn if 'rcnn' in test_cfg else test_cfg).score_thr = args.score_thr
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


def draw(cfg, model, image_rgb, result, out_file, score_thr):
    """Write the image with predictions drawn by the library's local visualizer."""
    if library_of(cfg) == 'mmdet':
        from mmdet.visualization import DetLocalVisualizer as V
    else:
        from mmseg.visualization import SegLocalVisualizer as V
    vis = V.get_instance(f'ufo_highres_{time.monotonic_ns()}')
    vis.dataset_meta = model.dataset_meta
    kwargs = dict(pred_score_thr=score_thr) if library_of(cfg) == 'mmdet' else {}
    vis.add_datasample('prediction', image_rgb, data_sample=result, draw_gt=False,
                       show=False, out_file=str(out_file), **kwargs)


def run_one(args, size=None, image_path=None) -> dict:
    """Everything for one input, in this process."""
    import cv2
    cfg = load_config(args.config, args.cfg_options)
    gt = None
    if image_path:
        image = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(image_path)
        image = image[..., ::-1]
        stem = Path(image_path).stem
    else:
        paths = dataset_paths(cfg)
        hw = (size, size)
        if library_of(cfg) == 'mmdet':
            image, gt = compose_coco(paths['ann_file'], paths['img_dir'], hw,
                                     fraction=args.tile_fraction or 0.25, seed=args.seed)
        else:
            image, gt = compose_seg(paths['img_dir'], paths['ann_dir'], hw,
                                    paths['img_suffix'], paths['seg_map_suffix'],
                                    fraction=args.tile_fraction or 1.0, seed=args.seed)
        stem = f'composed_{size}x{size}'
    model = build_model(prepare_for_size(cfg, image.shape[:2], args), args.checkpoint,
                        args.device)
    base_peak, base_rss = peak_rss_mb(), current_rss_mb()
    result, seconds = infer(cfg, model, image, args.repeat)
    peak = peak_rss_mb()
    row = dict(input=image_path or 'composed', height=int(image.shape[0]),
               width=int(image.shape[1]), seconds=round(seconds, 3),
               peak_rss_mb=round(peak, 1), rss_before_mb=round(base_rss, 1),
               inference_peak_mb=round(max(0.0, peak - base_rss), 1))
    if base_peak > peak - 1:
        row['note'] = 'peak reached before inference (model loading)'
    if library_of(cfg) == 'mmdet':
        pred = result.pred_instances
        row['detections'] = int((pred.scores >= args.score_thr).sum())
        if gt is not None:
            row['objects'] = len(gt['annotations'])
            row.update(coco_map(gt, result, model.dataset_meta['classes'], 'masks' in pred))
    else:
        pred = result.pred_sem_seg.data[0].cpu().numpy()
        if gt is not None:
            ds = cfg.test_dataloader.dataset
            row['mIoU'] = seg_miou(pred, gt, len(model.dataset_meta['classes']),
                                   bool(ds.get('reduce_zero_label', False)))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f'{stem}_pred.jpg'
    draw(cfg, model, image, result, out_file, args.score_thr)
    row['picture'] = str(out_file)
    return row


def print_table(rows):
    keys = [k for k in ('input', 'height', 'width', 'seconds', 'peak_rss_mb', 'inference_peak_mb',
                        'objects', 'detections', 'bbox_mAP', 'segm_mAP', 'mIoU')
            if any(k in r for r in rows)]
    print(' | '.join(keys))
    for r in rows:
        print(' | '.join(f'{r[k]:.3f}' if isinstance(r.get(k), float) and k.endswith(('mAP', 'mIoU'))
                         else str(r.get(k, '')) for k in keys))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='mmdet or mmseg config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--images', nargs='+', help='run on these images (own sizes) '
                        'instead of composed ones')
    parser.add_argument('--sizes', nargs='+', type=int, default=[2048],
                        help='side of each square composed image')
    parser.add_argument('--tile-fraction', type=float, default=None,
                        help='share of grid cells filled from a validation image (default: '
                        '0.25 for detection, 1.0 for segmentation); the rest is background')
    parser.add_argument('--seed', type=int, default=0, help='which cells are filled, and the background')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections kept (test_cfg score_thr), drawn and evaluated')
    parser.add_argument('--max-dets', type=int, default=1000,
                        help='cap on detections per image after area scaling (mmdet)')
    parser.add_argument('--repeat', type=int, default=1, help='runs per input; median time')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--out-dir', default='work_dirs/infer_highres',
                        help='pictures and results.json go here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--single', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.single:  # child: one input, one JSON line on stdout
        row = run_one(args, size=args.sizes[0], image_path=(args.images or [None])[0])
        print('RESULT ' + json.dumps(row), flush=True)
        return row
    jobs = ([['--images', p] for p in args.images] if args.images
            else [['--sizes', str(s)] for s in args.sizes])
    # drop the multi-valued options, then give each child exactly one input
    base, skip = [], False
    for a in argv:
        if a in ('--images', '--sizes'):
            skip = True
            continue
        if skip and a.startswith('--'):
            skip = False
        if not skip:
            base.append(a)
    rows = []
    for job in jobs:
        cmd = [sys.executable, osp.abspath(__file__)] + base + job + ['--single']
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
        if proc.returncode or not lines:
            sys.stdout.write(proc.stdout[-4000:])
            raise SystemExit(f'infer_highres: {" ".join(job)} failed (exit {proc.returncode})')
        rows.append(json.loads(lines[-1][len('RESULT '):]))
    print_table(rows)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'results.json').write_text(json.dumps(rows, indent=2))
    print(f'pictures and results.json in {out_dir}')
    return rows


if __name__ == '__main__':
    main()
