"""The large-scene detection benchmark (``ufo_mm.benchmark.large_detection``):
masks pasted into the scene as RLE, patch detections shifted and merged in
scene coordinates, COCOeval on a composed scene (ground truth as predictions
scores 1, maxDets cuts), the test_cfg and pipeline of each method, refused
arguments, and the command end to end (stream and sliced, each in its own
process) on a 384-px scene of the demo detector with random weights."""
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from pycocotools import mask as mask_util

from tests.tool_runner import run_tool
from tests.trained_demos import DET_DEMO as DEMO
from tests.trained_demos import save_initial_weights
from ufo_mm.benchmark import large_detection as bench

SIDE = 384  # 3 x 3 cells of the 128-px validation images
needs_sahi = pytest.mark.skipif(importlib.util.find_spec('sahi') is None,
                                reason='sahi (extra [bench]) is not installed: '
                                       'pip install --no-deps sahi')


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    from ufo_mm.datasets import make_coco
    root = tmp_path_factory.mktemp('synthetic_coco')
    make_coco(root, num_train=1, num_val=4, img_size=128, max_objects=3)
    return root


@pytest.fixture(scope='module')
def cfg_options(coco_root):
    return {'test_dataloader.dataset.data_root': f'{coco_root}/'}


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, cfg_options):
    """The demo detector's construction-time (random) weights, as a checkpoint."""
    return save_initial_weights(DEMO, tmp_path_factory.mktemp('ckpt') / 'random.pth',
                                cfg_options, init_weights=False)


@pytest.fixture(scope='module')
def scene(coco_root):
    """(RGB (384, 384, 3) uint8, COCO ground truth) with objects in 5 of 9 cells."""
    from ufo_mm.datasets.composed_scene import compose_coco
    return compose_coco(coco_root / 'annotations' / 'instances_val2017.json',
                        coco_root / 'val2017', (SIDE, SIDE), fraction=0.5, seed=0)


def case(method, **options):
    return bench.plan_cases([method], [SIDE], 1, str(DEMO), str(DEMO), **options)[0]


# ---------------------------------------------------------------- masks and merging

def test_paste_rle_equals_encoding_the_whole_scene():
    rng = np.random.default_rng(0)
    H, W = 37, 29
    mask = rng.random((11, 7)) > 0.5
    mask[:, 0] = False  # an empty first column: the strip starts at the second
    for x, y in ((0, 0), (22, 26), (5, 13)):  # top-left, bottom-right, inside
        scene = np.zeros((H, W), np.uint8)
        scene[y:y + 11, x:x + 7] = mask
        rle = bench.paste_rle(mask, (x, y), (H, W))
        assert rle == mask_util.encode(np.asfortranarray(scene)), (x, y)
        assert np.array_equal(mask_util.decode(rle), scene)
    full = np.ones((3, 4), bool)  # starts with a run of ones
    assert np.array_equal(mask_util.decode(bench.paste_rle(full, (0, 0), (3, 4))), full)
    empty = bench.paste_rle(np.zeros((5, 5), bool), (3, 3), (H, W))
    assert empty['size'] == [H, W] and mask_util.area(empty) == 0
    with pytest.raises(ValueError, match='not inside the 37x29 scene'):
        bench.paste_rle(mask, (23, 0), (H, W))


def patch_result(boxes, scores, labels, masks):
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.long),
        masks=torch.as_tensor(np.array(masks, bool).reshape(-1, 64, 64)))
    return sample


def box_mask(x1, y1, x2, y2):
    m = np.zeros((64, 64), bool)
    m[y1:y2, x1:x2] = True
    return m


@needs_sahi
def test_sliced_merge_gives_scene_coordinates():
    """Three 64-px patches of a 64 x 112 scene at x = 0, 48 and (empty) 48, y = 0:
    an object seen by both of the first two is kept once (the higher score), an
    object of the second patch is shifted by its offset, boxes and masks alike."""
    scene_hw, offsets = (64, 112), [[0, 0], [48, 0], [48, 0]]
    results = [
        patch_result([[50, 10, 60, 20]], [0.9], [1], [box_mask(50, 10, 60, 20)]),
        patch_result([[2, 10, 12, 20], [30, 40, 40, 50]], [0.6, 0.8], [1, 3],
                     [box_mask(2, 10, 12, 20), box_mask(30, 40, 40, 50)]),
        patch_result([], [], [], []),
    ]
    rles = []
    moved = [bench.scene_instances(r, o, scene_hw, rles) for r, o in zip(results, offsets)]
    assert len(rles) == 3 and 'masks' not in moved[1].pred_instances
    pred = bench.merge_patches(moved, offsets, scene_hw, rles, iou_thr=0.25)
    order = pred.scores.argsort(descending=True)
    assert pred.scores[order].tolist() == pytest.approx([0.9, 0.8])  # 0.6 merged into 0.9
    assert pred.bboxes[order].tolist() == [[50, 10, 60, 20], [78, 40, 88, 50]]
    assert pred.labels[order].tolist() == [1, 3]
    for i, (x1, y1, x2, y2) in zip(order.tolist(), ([50, 10, 60, 20], [78, 40, 88, 50])):
        expected = np.zeros(scene_hw, np.uint8)
        expected[y1:y2, x1:x2] = 1
        assert np.array_equal(mask_util.decode(pred.masks[i]), expected)
    # every patch empty: an empty scene result, masks included
    empty = [bench.scene_instances(patch_result([], [], [], []), o, scene_hw, [])
             for o in offsets]
    none = bench.merge_patches(empty, offsets, scene_hw, [], iou_thr=0.25)
    assert len(none) == 0 and list(none.masks) == []


# ---------------------------------------------------------------- evaluation

def gt_as_predictions(gt):
    dets = []
    for a in gt['annotations']:
        h, w = gt['images'][0]['height'], gt['images'][0]['width']
        rle = mask_util.merge(mask_util.frPyObjects(a['segmentation'], h, w))
        dets.append(dict(image_id=1, category_id=a['category_id'], bbox=a['bbox'], score=1.0,
                         segmentation=rle))
    return dets


def test_ground_truth_as_predictions_scores_one_and_max_dets_cuts(scene):
    from ufo_mm.evaluation.metrics import coco_eval
    _, gt = scene
    n = len(gt['annotations'])
    assert n >= 4
    dets = gt_as_predictions(gt)
    perfect = coco_eval(gt, dets, max_dets=n)
    assert perfect == pytest.approx({'bbox_mAP': 1.0, 'bbox_mAP_50': 1.0, 'segm_mAP': 1.0,
                                     'segm_mAP_50': 1.0})
    # COCOeval's maxDets caps each category of an image: below a class's object count
    per_class = max(sum(a['category_id'] == c for a in gt['annotations'])
                    for c in {a['category_id'] for a in gt['annotations']})
    assert per_class >= 2
    cut = coco_eval(gt, dets, max_dets=per_class - 1)
    assert cut['bbox_mAP'] < 1 and cut['segm_mAP'] < 1
    assert coco_eval(gt, [], ('bbox',)) == {'bbox_mAP': 0.0, 'bbox_mAP_50': 0.0}


# ---------------------------------------------------------------- configuration

def test_each_method_gets_its_model_counts_and_pipeline(cfg_options):
    from ufo_mm.builder import load_config
    cfg = load_config(DEMO, cfg_options)
    # the demo's test scale is 128 x 128: a 384 scene is 9 x its area, a 256 patch 4 x
    stream, pipeline = bench.detector_config(cfg, case('stream', max_dets=300, token_dtype='bf16'),
                                             (SIDE, SIDE))
    assert stream.model.type == 'StreamingMaskRCNN'
    t = stream.model.test_cfg
    assert (t.mode, t.mask_format, t.token_dtype) == ('stream', 'rle', 'bf16')
    assert 'band_rows' not in t  # options not given stay the detector's defaults
    assert t.rcnn.max_per_img == 300  # 50 x 9, capped at max_dets
    assert (t.rpn.nms_pre, t.rpn.max_per_img) == (1200, 900)  # 500 x 9 capped at 4 x 300
    assert pipeline[0]['type'] == 'mmdet.LoadImageFromNDArray'
    assert [p for p in pipeline if p['type'] == 'Resize'][0]['scale'] == (SIDE, SIDE)
    assert not any(p['type'] == 'LoadAnnotations' for p in pipeline)
    assert stream.model.data_preprocessor.pad_size_divisor == 32
    sliced, pipeline = bench.detector_config(
        cfg, case('sliced', max_dets=300, rpn_nms_pre=700), (256, 256))
    t = sliced.model.test_cfg
    assert t.mode == 'whole' and 'mask_format' not in t  # mmdet's own test: bitmap masks
    assert (t.rcnn.max_per_img, t.rpn.nms_pre, t.rpn.max_per_img) == (200, 700, 400)
    assert [p for p in pipeline if p['type'] == 'Resize'][0]['scale'] == (256, 256)
    assert cfg.model.test_cfg.rcnn.max_per_img == 50  # the config given is not changed


def test_bad_arguments_are_refused(tmp_path, monkeypatch):
    ok = dict(methods=['stream'], sides=[512])
    for bad, match in ((dict(methods=['tiles']), 'methods must be some of stream, sliced'),
                       (dict(sides=[512, 0]), 'sides must be positive'),
                       (dict(threads=0), 'threads must be at least 1'),
                       (dict(overlap_ratio=1.0), r'overlap_ratio must be in \[0, 1\)'),
                       (dict(merge_iou_thr=0.0), r'merge_iou_thr must be in \(0, 1\]'),
                       (dict(fraction=1.5), 'fraction'),
                       (dict(max_dets=0), 'max_dets must be at least 1'),
                       (dict(band_rows=-2), 'band_rows must be at least 1')):
        with pytest.raises(ValueError, match=match):
            bench.check_options(**dict(ok, **bad))
    with pytest.raises(FileNotFoundError, match='checkpoint .*missing.pth does not exist'):
        bench.check_options(config=str(DEMO), checkpoint=str(tmp_path / 'missing.pth'), **ok)
    bench.check_options(methods=['stream', 'whole'], sides=[384, 2048])
    with monkeypatch.context() as m:
        m.setitem(sys.modules, 'sahi.slicing', None)  # as if sahi were not installed
        with pytest.raises(ValueError, match=r'method sliced needs sahi \(extra \[bench\]\)'):
            bench.check_options(methods=['stream', 'sliced'], sides=[512])
    # the command says so and exits 2, before any case runs
    proc = run_tool('benchmark_large_det.py', DEMO, DEMO, '--overlap-ratio', 1,
                    '--out-dir', tmp_path / 'out', check=False, timeout=120)
    assert proc.returncode == 2 and 'overlap_ratio must be in [0, 1)' in proc.stderr
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------- real runs

@needs_sahi
def test_sliced_detections_and_masks_lie_in_the_scene(scene, checkpoint, cfg_options):
    """The demo detector (random weights) on the 384 scene in 256-px patches:
    4 patches (sahi moves the last row and column back inside), the merge cut
    to max_dets, every mask a 384 x 384 RLE inside its box, detections right
    of the first patch."""
    from mmengine.dataset import Compose

    from ufo_mm.builder import build_model, load_config
    image, _ = scene
    c = case('sliced', patch_size=256, max_dets=50)
    cfg, pipeline = bench.detector_config(load_config(DEMO, cfg_options), c, (256, 256))
    model = build_model(cfg, str(checkpoint))
    pred, counts = bench.detect_sliced(model, np.ascontiguousarray(image[..., ::-1]),
                                       Compose(pipeline), c)
    assert counts['patches'] == 4 and len(pred.masks) == len(pred)
    # random weights: each patch gives its most (50), the merge more than the scene's most
    assert len(pred) == 50 < counts['merged_detections']
    boxes = pred.bboxes.numpy()
    assert boxes.min() >= 0 and boxes.max() <= SIDE and boxes[:, 2].max() > 256
    for box, rle in zip(boxes, pred.masks):
        assert rle['size'] == [SIDE, SIDE]
        ys, xs = np.nonzero(mask_util.decode(rle))
        if xs.size:
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1
            assert ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1


@needs_sahi
def test_command_runs_stream_and_sliced_and_tabulates(checkpoint, coco_root, tmp_path):
    out = tmp_path / 'out'
    run_tool('benchmark_large_det.py', DEMO, checkpoint, '--sides', SIDE, '--methods', 'stream',
             'sliced', '--threads', 1, '--fraction', 0.5, '--patch-size', 256, '--max-dets', 60,
             '--out-dir', out, '--cfg-options', f'test_dataloader.dataset.data_root={coco_root}/',
             timeout=300)
    rows = json.loads((out / 'large_detection.json').read_text())
    assert [(r['method'], r['side'], r['status']) for r in rows] == [
        ('stream', SIDE, 'ok'), ('sliced', SIDE, 'ok')], rows
    stream, sliced = rows
    assert stream['objects'] == sliced['objects'] > 0  # one scene for both
    assert 0 < stream['detections'] <= 60 and sliced['detections'] > 0
    assert sliced['patches'] == 4 and 'patches' not in stream
    for r in rows:
        assert r['seconds'] > 0 and r['cpu_seconds'] > 0
        assert 0.2 < r['ready_rss_gb'] <= r['peak_rss_gb'] < 8
        assert all(0 <= r[k] <= 1 for k in ('bbox_mAP', 'segm_mAP', 'bbox_mAP_50'))
        assert r['max_dets'] == 60 and r['patch_size'] == 256  # every option in the row
    table = (out / 'large_detection.md').read_text()
    assert f"| stream | {SIDE} | {stream['objects']} | {stream['detections']} |" in table
    assert f"| {sliced['bbox_mAP']:.3f} | {sliced['segm_mAP']:.3f} | 4 |" in table
    # the rows tabulated again, and a failed case's row
    failed = dict(rows[0], status='out of memory (> 22 GiB)', peak_rss_gb=22.1, side=8192)
    bench.write_outputs(rows + [failed], str(tmp_path / 'again'), 'title')
    again = (tmp_path / 'again' / 'large_detection.md').read_text()
    assert again.startswith('title\n') and table.split('\n', 1)[1] in again + '\n'
    assert '| stream | 8192 | | | out of memory (> 22 GiB) | | 22.1 |' in again
