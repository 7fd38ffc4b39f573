"""Streamed whole-image detection equals whole-image detection.

Mask R-CNN with UFO-ViT backbones (the demo's patch-8 arch with a 64-channel
FPN, and a small patch-16 arch in the S12/16 COCO config's 256-channel FPN and
heads), random weights and random BatchNorm statistics, every detection kept
(score threshold 0), on images whose sides are multiples of neither 32 nor
the band, in bands small enough to force dozens of them, through mmdet's own
``inference_detector`` with the test pipeline's resize to the image's own size: the same boxes,
scores, labels and masks as mode 'whole'; the RLE masks equal to mmdet's own
encoding of its (N, H, W) masks; the refusals.
"""
import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools import mask as mask_util

from tests.streaming.helpers import randomise_bn
from ufo_mm.engine.distributed import sync_bn_to_bn as no_sync_bn
from ufo_mm.streaming.detector import column_strip_rle

REPO = __import__('pathlib').Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py'
S12 = REPO / 'configs/ufo_vit/mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-1x_coco.py'
SMALL = dict(embed_dims=64, num_heads=4, depth=4, patch_size=16, out_indices=(0, 1, 2, 3))
HW = (229, 301)  # multiples of neither 32 nor the bands below
BANDS = dict(band_rows=5, tokens_per_band=40)  # 12 bands of the stride-4 level


def detector_cfg(path):
    cfg = Config.fromfile(str(path))
    no_sync_bn(cfg.model)
    if path == S12:
        cfg.model.backbone.update(arch=SMALL, init_cfg=None)
        cfg.model.neck.in_channels = [64] * 4
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # every detection, not only confident ones
    # the image at its own size (mmdet's heads need the scale factor Resize records)
    for t in cfg.test_dataloader.dataset.pipeline:
        if t['type'] == 'Resize':
            t.update(scale=HW[::-1], keep_ratio=False)
    cfg.test_pipeline = cfg.test_dataloader.dataset.pipeline
    return cfg


def build(cfg):
    from mmdet.apis import init_detector
    with pytest.warns(UserWarning):  # "checkpoint is None, use COCO classes by default"
        model = init_detector(cfg, None, device='cpu')
    return randomise_bn(model)


def detect(model, image, mode='whole', **stream):
    from mmdet.apis import inference_detector
    heads_cfg = {k: model.test_cfg[k] for k in ('rpn', 'rcnn')}
    model.test_cfg = dict(heads_cfg, mode=mode, **stream)
    with torch.no_grad():
        return inference_detector(model, image).pred_instances


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp('det') / 'scene.png'
    cv2.imwrite(str(path), rng.integers(0, 256, HW + (3,), dtype=np.uint8))
    return str(path)


@pytest.fixture(scope='module', params=[DEMO, S12], ids=['demo-p8', 's12-p16-small'])
def results(request, image):
    model = build(detector_cfg(request.param))
    whole = detect(model, image)
    return model, whole, detect(model, image, 'stream', **BANDS)


def test_streamed_detections_equal_whole_image_ones(results):
    model, whole, stream = results
    assert len(whole) == model.test_cfg['rcnn']['max_per_img']  # score_thr 0: all kept
    assert whole.masks.shape[1:] == HW
    assert torch.equal(stream.labels, whole.labels)
    torch.testing.assert_close(stream.scores, whole.scores, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stream.bboxes, whole.bboxes, rtol=1e-4, atol=1e-3)
    assert (stream.masks == whole.masks).float().mean() >= 0.999


def test_rle_masks_are_mmdets_encoding_of_its_masks(results, image):
    """mask_format 'rle': exactly mmdet's RLE of the (N, H, W) masks of the
    same streamed features (those differ from mode whole's by float rounding,
    tested above), never forming them."""
    from mmdet.structures.mask import encode_mask_results
    model, _, stream = results
    rle = detect(model, image, 'stream', mask_format='rle', **BANDS)
    assert isinstance(rle.masks, list) and len(rle.masks) == len(stream)
    want = encode_mask_results(stream.masks.numpy())
    assert [r['counts'] for r in rle.masks] == [r['counts'] for r in want]
    assert all(list(r['size']) == list(HW) for r in rle.masks)
    assert torch.equal(rle.bboxes, stream.bboxes) and torch.equal(rle.scores, stream.scores)


def test_detect_large_is_mode_stream_and_leaves_test_cfg_alone(results, image):
    """detect_large (the image array; its options arguments): mode stream's
    detections with RLE masks, while ``model.test_cfg`` stays the same
    object, unchanged, in mode 'whole'."""
    import copy

    from ufo_mm.streaming.detector import detect_large
    model = results[0]
    want = detect(model, image, 'stream', mask_format='rle', **BANDS)
    model.test_cfg = before = {k: model.test_cfg[k] for k in ('rpn', 'rcnn')}
    snapshot = copy.deepcopy(before)
    got = detect_large(model, cv2.imread(image), **BANDS)
    assert model.test_cfg is before and model.test_cfg == snapshot
    assert torch.equal(got.labels, want.labels)
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.bboxes, want.bboxes, rtol=1e-4, atol=1e-3)
    same = [(mask_util.decode(a) == mask_util.decode(b)).mean()
            for a, b in zip(got.masks, want.masks)]
    assert len(same) == len(want) and np.mean(same) >= 0.999


@pytest.mark.parametrize('top,left,h,w', [(0, 0, 5, 4), (3, 2, 6, 9), (10, 21, 6, 3),
                                          (0, 0, 16, 24), (7, 5, 0, 0), (15, 23, 1, 1)])
def test_column_strip_rle_is_pycocotools_encoding(top, left, h, w):
    H, W = 16, 24
    rng = np.random.default_rng(top * 100 + left)
    crop = rng.random((h, w)) < 0.5
    if h and w:
        crop[0, 0] = True  # a run of ones at the strip's first pixel
    full = np.zeros((H, W), dtype=np.uint8)
    full[top:top + h, left:left + w] = crop
    want = mask_util.encode(np.asfortranarray(full))
    got = column_strip_rle(crop, slice(top, top + h), slice(left, left + w), H, W)
    assert got['counts'] == want['counts'] and list(got['size']) == [H, W]
    assert np.array_equal(mask_util.decode(got), full)


def test_registered_and_loads_mask_rcnn_weights():
    import ufo_mm  # noqa: F401
    from mmdet.models.detectors import MaskRCNN
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from ufo_mm.streaming.detector import StreamingMaskRCNN
    register_all_modules()
    cfg = detector_cfg(DEMO)
    model = MODELS.build(cfg.model)
    assert type(model) is StreamingMaskRCNN and isinstance(model, MaskRCNN)
    plain = MODELS.build(dict(cfg.model, type='MaskRCNN'))
    assert plain.load_state_dict(model.state_dict()) is not None  # strict: same keys


def test_refusals(image):
    model = build(detector_cfg(DEMO))
    with pytest.raises(ValueError, match="mode must be 'whole' or 'stream'"):
        detect(model, image, 'tiles')
    with pytest.raises(KeyError, match='tile_size'):
        detect(model, image, 'stream', tile_size=64)
    with pytest.raises(ValueError, match="mask_format must be 'bitmap' or 'rle'"):
        detect(model, image, 'stream', mask_format='png')
    rcnn = dict(model.roi_head.test_cfg)
    model.roi_head.test_cfg.mask_thr_binary = -1
    with pytest.raises(ValueError, match='mask_thr_binary'):
        detect(model, image, 'stream', mask_format='rle')
    model.roi_head.test_cfg.mask_thr_binary = rcnn['mask_thr_binary']
    model.backbone.train()
    with pytest.raises(RuntimeError, match='eval mode'):
        detect(model, image, 'stream')
    cfg = detector_cfg(DEMO)
    cfg.model.backbone.attn_type = 'xca'
    with pytest.raises(ValueError, match='UFO attention'):
        detect(build(cfg), image, 'stream')
