"""The inference APIs users call, on checkpoints written by the training tools:
mmdet's DetInferencer and init_detector/inference_detector, mmseg's
MMSegInferencer and init_model/inference_model.

Both demo configs (as shipped, the ones docs/ point users at), trained a few
iterations on synthetic data once per session (``det_demo`` by mmdet's
tools/train.py, ``seg_demo`` by the project's; tests/trained_demos.py). The checks: the
prediction structures and their sizes (image-sized masks and label maps on a
non-square image the model never saw at its training size), path and ndarray
inputs agreeing, the high-level and low-level API agreeing, the files the
inferencers write, and the class names and palette being the synthetic
dataset's (carried by the checkpoint's meta.dataset_meta), not COCO's 80 or
Cityscapes' 19; also in a fresh process that imports only mmdet/mmseg.
Last, tools/convert_checkpoint.py on a trained dense checkpoint: its backbone
loads through init_cfg=Pretrained. (The converted file is backbone-only and
its meta does not carry dataset_meta: it initialises a new model, it is not
for the inferencers, which would fall back to COCO's classes.)
"""
import json
import warnings

import cv2
import numpy as np
import pytest
import torch

from tests.tool_runner import run_tool
from tests.trained_demos import DET_DEMO, SEG_DEMO
from ufo_mm.datasets import ADE_CLASSES, ADE_PALETTE, COCO_CLASSES
from ufo_mm.datasets.shapes import image_rng, write_image
from ufo_mm.datasets.synthetic_ade import render_sample
from ufo_mm.datasets.synthetic_coco import render_image
from ufo_mm.safe_load import safe_torch_load

# Inference image: non-square, neither side a multiple of the patch size or of
# the detector's 32-px padding, and not the 128-px training size.
IMG_HW = (52, 90)
# What the inferencers warn when a checkpoint has no dataset_meta (they then
# fall back to COCO / Cityscapes class names).
NO_META_WARNING = 'dataset_meta or class names are not saved'


def _no_meta_warning(record):
    messages = [str(w.message) for w in record]
    assert not any(NO_META_WARNING in m for m in messages), messages


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def det_ckpt(det_demo):
    """The Mask R-CNN demo's checkpoint of the session's training."""
    return det_demo.checkpoint


@pytest.fixture(scope='module')
def seg_ckpt(seg_demo):
    """The UperNet demo's checkpoint of the session's training."""
    return seg_demo.checkpoint


@pytest.fixture(scope='module')
def det_image(tmp_path_factory):
    """(path, BGR ndarray as cv2/mmcv read it) of an unseen synthetic COCO image."""
    rgb, _ = render_image(image_rng(12345, 1), IMG_HW, max_objects=3)
    path = tmp_path_factory.mktemp('det_image') / 'shapes.jpg'
    write_image(path, rgb)
    return path, cv2.imread(str(path))


@pytest.fixture(scope='module')
def seg_image(tmp_path_factory):
    rgb, _ = render_sample(image_rng(12345, 1), IMG_HW)
    path = tmp_path_factory.mktemp('seg_image') / 'scene.jpg'
    write_image(path, rgb)
    return path, cv2.imread(str(path))


@pytest.fixture(scope='module')
def det_inferencer(det_ckpt):
    from mmdet.apis import DetInferencer
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        inferencer = DetInferencer(model=str(DET_DEMO), weights=str(det_ckpt), device='cpu',
                                   show_progress=False)
    _no_meta_warning(record)
    return inferencer


@pytest.fixture(scope='module')
def seg_inferencer(seg_ckpt):
    from mmseg.apis import MMSegInferencer
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        inferencer = MMSegInferencer(model=str(SEG_DEMO), weights=str(seg_ckpt), device='cpu')
    _no_meta_warning(record)
    return inferencer


# ---------------------------------------------------------------- checks

def assert_det_sample(sample, hw):
    from mmdet.structures import DetDataSample
    assert isinstance(sample, DetDataSample)
    assert tuple(sample.ori_shape) == hw
    pred = sample.pred_instances
    n = len(pred)
    assert n > 0, 'no detections: the score threshold or the training changed'
    assert pred.bboxes.shape == (n, 4) and pred.bboxes.dtype == torch.float32
    assert pred.scores.shape == (n,) and ((pred.scores >= 0) & (pred.scores <= 1)).all()
    assert pred.labels.shape == (n,) and pred.labels.dtype == torch.int64
    assert ((pred.labels >= 0) & (pred.labels < len(COCO_CLASSES))).all()
    # masks pasted back at the original image size, one per box
    assert pred.masks.shape == (n, *hw) and pred.masks.dtype == torch.bool
    # boxes in original-image pixels
    h, w = hw
    assert (pred.bboxes[:, 0::2] >= 0).all() and (pred.bboxes[:, 0::2] <= w).all()
    assert (pred.bboxes[:, 1::2] >= 0).all() and (pred.bboxes[:, 1::2] <= h).all()
    assert (pred.bboxes[:, 2:] >= pred.bboxes[:, :2]).all()
    return pred


def assert_same_instances(a, b):
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.scores, b.scores)
    torch.testing.assert_close(a.bboxes, b.bboxes)
    assert torch.equal(a.masks, b.masks)


def assert_seg_sample(sample, hw):
    from mmseg.structures import SegDataSample
    assert isinstance(sample, SegDataSample)
    label = sample.pred_sem_seg.data
    assert label.shape == (1, *hw)  # the input image's size, not the 128-px crop size
    assert label.dtype == torch.int64
    assert ((label >= 0) & (label < len(ADE_CLASSES))).all()
    assert sample.seg_logits.data.shape == (len(ADE_CLASSES), *hw)
    # the label map is the argmax of the logits
    assert torch.equal(label[0], sample.seg_logits.data.argmax(0))
    return label[0]


# ---------------------------------------------------------------- checkpoints

def test_training_checkpoints_carry_the_synthetic_dataset_meta(det_demo, seg_demo):
    det = safe_torch_load(det_demo.checkpoint)
    assert det['meta']['iter'] == det_demo.iters
    assert tuple(det['meta']['dataset_meta']['classes']) == COCO_CLASSES
    seg = safe_torch_load(seg_demo.checkpoint)
    assert seg['meta']['iter'] == seg_demo.iters
    assert tuple(seg['meta']['dataset_meta']['classes']) == ADE_CLASSES
    assert [list(c) for c in seg['meta']['dataset_meta']['palette']] == ADE_PALETTE
    for ckpt in (det, seg):
        assert any(k.startswith('backbone.blocks.0.') for k in ckpt['state_dict'])


# ---------------------------------------------------------------- mmdet

def test_det_inferencer_reports_the_synthetic_classes(det_inferencer):
    assert tuple(det_inferencer.model.dataset_meta['classes']) == COCO_CLASSES
    vis_meta = det_inferencer.visualizer.dataset_meta
    assert tuple(vis_meta['classes']) == COCO_CLASSES
    # one colour per class at least (mmdet draws label i with palette[i])
    assert len(vis_meta['palette']) >= len(COCO_CLASSES)


def test_det_inferencer_on_path_and_ndarray(det_inferencer, det_image):
    path, array = det_image
    by_path = det_inferencer(str(path), return_datasamples=True)['predictions']
    by_array = det_inferencer(array, return_datasamples=True)['predictions']
    assert len(by_path) == len(by_array) == 1
    pred = assert_det_sample(by_path[0], IMG_HW)
    assert_det_sample(by_array[0], IMG_HW)
    # the same pixels give the same detections
    assert_same_instances(pred, by_array[0].pred_instances)


def test_det_inferencer_writes_predictions_and_pictures(det_inferencer, det_image, tmp_path):
    path, _ = det_image
    out = det_inferencer(str(path), out_dir=str(tmp_path), no_save_pred=False,
                         return_vis=True, pred_score_thr=0.0)
    pred = out['predictions'][0]  # plain-python form of the prediction
    n = len(pred['labels'])
    assert n > 0 and len(pred['scores']) == n and np.array(pred['bboxes']).shape == (n, 4)
    assert all(0 <= label < len(COCO_CLASSES) for label in pred['labels'])
    assert len(pred['masks']) == n and all(list(m['size']) == list(IMG_HW) for m in pred['masks'])
    saved = json.loads((tmp_path / 'preds' / 'shapes.json').read_text())
    assert saved['labels'] == pred['labels'] and len(saved['masks']) == n
    picture = cv2.imread(str(tmp_path / 'vis' / 'shapes.jpg'))
    assert picture.shape == (*IMG_HW, 3)
    assert out['visualization'][0].shape == (*IMG_HW, 3)


def test_init_detector_and_inference_detector(det_ckpt, det_image, det_inferencer):
    from mmdet.apis import inference_detector, init_detector
    path, array = det_image
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        model = init_detector(str(DET_DEMO), str(det_ckpt), device='cpu')
    _no_meta_warning(record)
    assert tuple(model.dataset_meta['classes']) == COCO_CLASSES
    assert len(model.dataset_meta['palette']) >= len(COCO_CLASSES)
    assert not model.training and next(model.parameters()).device.type == 'cpu'
    # the weights are the trained ones
    trained = safe_torch_load(det_ckpt)['state_dict']
    state = model.state_dict()
    assert trained.keys() == state.keys()
    assert all(torch.equal(trained[k], state[k]) for k in trained)

    by_path = inference_detector(model, str(path))
    by_array = inference_detector(model, array)
    pred = assert_det_sample(by_path, IMG_HW)
    assert_same_instances(pred, assert_det_sample(by_array, IMG_HW))
    names = [model.dataset_meta['classes'][i] for i in pred.labels.tolist()]
    assert set(names) <= set(COCO_CLASSES)
    # a list in, a list out (of one input type: mmdet picks the loading
    # transform from the first item, so a path after an array is not loaded)
    batch = inference_detector(model, [array, array])
    assert isinstance(batch, list) and len(batch) == 2
    for sample in batch:
        assert_same_instances(pred, sample.pred_instances)
    # the low-level API and DetInferencer agree
    high = det_inferencer(str(path), return_datasamples=True)['predictions'][0]
    assert_same_instances(pred, high.pred_instances)


# ---------------------------------------------------------------- mmseg

def test_seg_inferencer_reports_and_draws_the_synthetic_classes(seg_inferencer, seg_image):
    meta = seg_inferencer.model.dataset_meta
    assert tuple(meta['classes']) == ADE_CLASSES
    assert [list(c) for c in meta['palette']] == ADE_PALETTE
    path, _ = seg_image
    out = seg_inferencer(str(path), return_vis=True, opacity=1.0, with_labels=False)
    # MMSegInferencer.__init__ gives its visualizer Cityscapes' meta (classes=None
    # -> set_dataset_meta defaults); visualize() replaces it with the model's
    vis_meta = seg_inferencer.visualizer.dataset_meta
    assert tuple(vis_meta['classes']) == ADE_CLASSES
    assert [list(c) for c in vis_meta['palette']] == ADE_PALETTE
    # opaque drawing: every pixel has its predicted class's synthetic colour
    label = out['predictions']
    picture = out['visualization']  # RGB
    assert picture.shape == (*IMG_HW, 3)
    assert (picture == np.array(ADE_PALETTE, dtype=np.uint8)[label]).all()


def test_seg_inferencer_on_path_and_ndarray(seg_inferencer, seg_image):
    path, array = seg_image
    by_path = seg_inferencer(str(path), return_datasamples=True)
    by_array = seg_inferencer(array, return_datasamples=True)
    label = assert_seg_sample(by_path, IMG_HW)
    assert torch.equal(label, assert_seg_sample(by_array, IMG_HW))


def test_seg_inferencer_writes_label_maps_and_pictures(seg_inferencer, seg_image, tmp_path):
    path, _ = seg_image
    out = seg_inferencer(str(path), out_dir=str(tmp_path), return_vis=True)
    label = out['predictions']
    assert label.shape == IMG_HW and ((label >= 0) & (label < len(ADE_CLASSES))).all()
    # label maps are named by mmseg's running count of images, not the input's name
    written = sorted((tmp_path / 'pred').glob('*_pred.png'))
    assert len(written) == 1, written
    saved = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert saved.shape == IMG_HW and (saved == label).all()
    picture = cv2.imread(str(tmp_path / 'vis' / 'scene.jpg'))
    assert picture.shape == (*IMG_HW, 3)
    assert out['visualization'].shape == (*IMG_HW, 3)


def test_init_model_and_inference_model(seg_ckpt, seg_image, seg_inferencer):
    from mmseg.apis import inference_model, init_model
    path, array = seg_image
    model = init_model(str(SEG_DEMO), str(seg_ckpt), device='cpu')
    assert tuple(model.dataset_meta['classes']) == ADE_CLASSES
    assert [list(c) for c in model.dataset_meta['palette']] == ADE_PALETTE
    assert not model.training
    trained = safe_torch_load(seg_ckpt)['state_dict']
    state = model.state_dict()
    assert trained.keys() == state.keys()
    assert all(torch.equal(trained[k], state[k]) for k in trained)

    label = assert_seg_sample(inference_model(model, str(path)), IMG_HW)
    assert torch.equal(label, assert_seg_sample(inference_model(model, array), IMG_HW))
    # the low-level API and MMSegInferencer agree
    assert torch.equal(label, seg_inferencer(str(path), return_datasamples=True)
                       .pred_sem_seg.data[0])


# ---------------------------------------------------------------- a user's process

FRESH_PROCESS = '''
import json, sys
from mmdet.apis import DetInferencer
from mmseg.apis import MMSegInferencer
det_cfg, det_ckpt, det_img, seg_cfg, seg_ckpt, seg_img = sys.argv[1:]
before = 'ufo_mm' in sys.modules
# nothing imports ufo_mm here: the configs' custom_imports must register
# UFOViT and the safe checkpoint loader before the weights are read
det = DetInferencer(model=det_cfg, weights=det_ckpt, device='cpu', show_progress=False)
seg = MMSegInferencer(model=seg_cfg, weights=seg_ckpt, device='cpu')
d = det(det_img, return_datasamples=True)['predictions'][0]
s = seg(seg_img, return_datasamples=True)
print(json.dumps(dict(
    ufo_mm_before=before, ufo_mm_after='ufo_mm' in sys.modules,
    det_classes=list(det.model.dataset_meta['classes']),
    det_masks=list(d.pred_instances.masks.shape),
    seg_classes=list(seg.model.dataset_meta['classes']),
    seg_shape=list(s.pred_sem_seg.shape))))
'''


def test_inferencers_in_a_fresh_process_without_importing_ufo_mm(det_ckpt, seg_ckpt, det_image,
                                                                 seg_image, tmp_path):
    """What a user's script does: only mmdet/mmseg imported, the config and a
    checkpoint of the training tools given by path."""
    script = tmp_path / 'user_script.py'
    script.write_text(FRESH_PROCESS)
    proc = run_tool(script, DET_DEMO, det_ckpt, det_image[0], SEG_DEMO, seg_ckpt, seg_image[0],
                    timeout=300)
    log = proc.stdout + proc.stderr
    assert 'Weights only load failed' not in log and NO_META_WARNING not in log
    assert 'Loads checkpoint by local_safe backend' in log  # ufo_mm's weights_only loader
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result['ufo_mm_before'] and result['ufo_mm_after']
    assert result['det_classes'] == list(COCO_CLASSES)
    assert result['seg_classes'] == list(ADE_CLASSES)
    assert result['det_masks'][1:] == list(IMG_HW) and result['det_masks'][0] > 0
    assert result['seg_shape'] == list(IMG_HW)


# ---------------------------------------------------------------- conversion

@pytest.mark.parametrize('task', ['det', 'seg'])
def test_convert_trained_checkpoint_backbone_loads_through_init_cfg(task, request, tmp_path):
    """tools/convert_checkpoint.py --prefix backbone on a dense checkpoint of
    tools/train.py: a backbone-only file whose weights load, unchanged, into a
    fresh UFOViT through init_cfg=dict(type='Pretrained')."""
    from mmengine.config import Config

    from ufo_mm.models import UFOViT
    ckpt = request.getfixturevalue(f'{task}_ckpt')
    dst = tmp_path / 'backbone.pth'
    run_tool('convert_checkpoint.py', ckpt, dst, '--prefix', 'backbone', timeout=300)

    written = safe_torch_load(dst)
    assert set(written) == {'state_dict', 'meta'}
    meta = written['meta']
    assert meta['source'] == str(ckpt) and meta['prefix'] == 'backbone'
    trained = {k[len('backbone.'):]: v for k, v in safe_torch_load(ckpt)['state_dict'].items()
               if k.startswith('backbone.')}
    assert written['state_dict'].keys() == trained.keys()
    assert not meta['missing'] and not meta['dropped']

    demo = Config.fromfile(str(DET_DEMO if task == 'det' else SEG_DEMO))
    backbone = {k: v for k, v in demo.model.backbone.items() if k not in ('type', '_delete_')}
    backbone['init_cfg'] = dict(type='Pretrained', checkpoint=str(dst))
    model = UFOViT(**backbone)
    model.init_weights()
    state = model.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in trained)
