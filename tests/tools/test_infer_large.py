"""tools/infer_large.py: the demo segmentor trained once per session (``seg_demo``) writes
full-size labels equal to mmseg's own whole-image ``inference_model`` and
prints its JSON line, also for a TIFF read band by band; corrupt and truncated
images and a too small memory budget are refused naming the cause; a
StreamingMaskRCNN config detects as mmdet's ``inference_detector`` does.
"""
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from tests.tool_runner import REPO, run_tool
from tests.trained_demos import save_initial_weights

DEMO = 'configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py'
SCENE_HW = (301, 457)  # odd: neither the patch, the padding nor a band divides it
JSON_KEYS = {'height', 'width', 'seconds', 'peak_rss_gb', 'labels', 'overlay', 'num_classes',
             'band_rows', 'image_read_seconds'}


@pytest.fixture(scope='module')
def demo_ckpt(seg_demo):
    """The UperNet demo's checkpoint of the session's training (once the
    streaming core is there)."""
    pytest.importorskip('ufo_mm.streaming')
    return seg_demo.checkpoint


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    from ufo_mm.datasets.shapes import image_rng
    from ufo_mm.datasets.synthetic_ade import render_sample
    rgb, _ = render_sample(image_rng(4321, 1), SCENE_HW)
    path = tmp_path_factory.mktemp('scene') / 'scene.png'
    cv2.imwrite(str(path), rgb[..., ::-1])
    return path


@pytest.fixture(scope='module')
def whole_image_labels(demo_ckpt, scene):
    """mmseg's own inference_model on the whole image, no Resize in the test pipeline."""
    from mmseg.apis import inference_model, init_model
    model = init_model(DEMO, str(demo_ckpt), device='cpu')
    model.cfg.test_pipeline = [t for t in model.cfg.test_pipeline if t['type'] != 'Resize']
    result = inference_model(model, cv2.imread(str(scene)))
    return result.pred_sem_seg.data[0].numpy()


def infer_large(*args, check=True):
    return run_tool('infer_large.py', *args, check=check, timeout=300)


@pytest.mark.parametrize('band_rows', [None, 48])
def test_command_writes_full_size_labels_equal_to_whole_image_inference(
        band_rows, demo_ckpt, scene, whole_image_labels, tmp_path):
    extra = [] if band_rows is None else ['--band-rows', band_rows]
    proc = infer_large(DEMO, demo_ckpt, scene, '--out-dir', tmp_path, '--overlay-side', 200,
                       *extra)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert JSON_KEYS <= row.keys()
    assert (row['height'], row['width']) == SCENE_HW and row['num_classes'] == 9
    # the rows used: those given, else the default for the width
    from ufo_mm.streaming.predict import default_band_rows
    default = default_band_rows(torch.device('cpu'), 9, SCENE_HW[1])
    assert row['band_rows'] == (band_rows or default) and row['seconds'] > 0
    assert 0 < row['peak_rss_gb'] < 6  # GiB, of this small run
    assert row['labels'] == str(tmp_path / 'scene_labels.png')
    labels = cv2.imread(row['labels'], cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and labels.shape == SCENE_HW
    assert np.array_equal(labels, whole_image_labels)
    overlay = cv2.imread(str(tmp_path / 'scene_overlay.jpg'))
    assert row['overlay'] == str(tmp_path / 'scene_overlay.jpg')
    assert overlay.shape == (132, 200, 3)
    assert re.search(r'(\d+)/\1, ', proc.stderr), proc.stderr[-2000:]  # the bar, finished


def test_command_refuses_a_corrupt_image_naming_it(demo_ckpt, scene, tmp_path):
    broken = tmp_path / 'broken.png'
    broken.write_bytes(scene.read_bytes()[:1000])
    proc = infer_large(DEMO, demo_ckpt, broken, '--out-dir', tmp_path, check=False)
    assert proc.returncode != 0
    assert f'cannot read image {broken}' in proc.stderr and 'Traceback' not in proc.stderr
    assert not list(tmp_path.glob('*_labels.png'))


@pytest.fixture(scope='module')
def scene_tif(scene):
    """The scene's pixels as a tiled, compressed TIFF (read band by band)."""
    path = scene.with_suffix('.tif')
    tifffile.imwrite(path, cv2.imread(str(scene))[..., ::-1], photometric='rgb',
                     tile=(64, 64), compression='zlib')
    return path


def test_command_reads_a_tiff_band_by_band_and_writes_labels_band_by_band(
        demo_ckpt, scene_tif, whole_image_labels, tmp_path):
    """A tiled TIFF: read band by band, labels written as a tiled TIFF, equal
    to mmseg's inference on the whole image; with the token tensors on disk
    and a PNG of labels too."""
    proc = infer_large(DEMO, demo_ckpt, scene_tif, '--out-dir', tmp_path, '--overlay-side', 200)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 'read band by band' in proc.stderr
    assert row['labels'] == str(tmp_path / 'scene_labels.tif') and row['labels_format'] == 'tif'
    assert row['token_place'] == 'compute'
    assert np.array_equal(tifffile.imread(row['labels']), whole_image_labels)
    assert cv2.imread(row['overlay']).shape == (132, 200, 3)
    out = tmp_path / 'disk'
    proc = infer_large(DEMO, demo_ckpt, scene_tif, '--out-dir', out, '--token-device', 'disk',
                       '--labels-format', 'png', '--max-ram-gb', 64)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row['token_place'] == 'disk' and row['max_ram_gb'] == 64
    labels = cv2.imread(row['labels'], cv2.IMREAD_UNCHANGED)
    assert np.array_equal(labels, whole_image_labels)
    assert sorted(os.listdir(out)) == ['scene_labels.png', 'scene_overlay.jpg']  # no scratch


def test_command_refuses_a_truncated_tiff_and_a_too_small_budget(
        demo_ckpt, scene_tif, tmp_path):
    broken = tmp_path / 'broken.tif'
    broken.write_bytes(scene_tif.read_bytes()[:-5000])
    proc = infer_large(DEMO, demo_ckpt, broken, '--out-dir', tmp_path / 'a', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f'{broken}: truncated' in proc.stderr
    proc = infer_large(DEMO, demo_ckpt, scene_tif, '--out-dir', tmp_path / 'b',
                       '--max-ram-gb', 0.05, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert re.search(r'infer_large: a memory budget of 0\.05 GiB is too small for one band: '
                     r'this run needs at least \d+\.\d\d GiB', proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / 'a').exists() and os.listdir(tmp_path / 'b') == []


DET_DEMO = 'configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py'
DET_KEYS = {'height', 'width', 'seconds', 'peak_rss_gb', 'instances', 'overlay',
            'num_instances', 'band_rows', 'image_read_seconds'}


@pytest.fixture(scope='module')
def det_ckpt(tmp_path_factory):
    """The Mask R-CNN demo's initial weights, saved as a checkpoint with its classes."""
    return save_initial_weights(REPO / DET_DEMO, tmp_path_factory.mktemp('det') / 'init.pth')


def test_command_detects_on_the_whole_image_as_mmdet_does(det_ckpt, scene, tmp_path):
    """A StreamingMaskRCNN config: every detection (score threshold 0) as
    COCO results with RLE masks, equal to mmdet's own whole-image
    ``inference_detector`` on the unresized image."""
    import torch
    from mmdet.apis import inference_detector, init_detector
    from pycocotools import mask as mask_util

    opts = ['model.test_cfg.rcnn.score_thr=0']
    proc = infer_large(DET_DEMO, det_ckpt, scene, '--out-dir', tmp_path, '--overlay-side', 200,
                       '--band-rows', 16, '--max-dets', 70, '--cfg-options', *opts)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert DET_KEYS <= row.keys()
    assert (row['height'], row['width']) == SCENE_HW and row['num_instances'] == 70
    assert row['instances'] == str(tmp_path / 'scene_instances.json')
    out = json.loads(Path(row['instances']).read_text())
    assert (out['height'], out['width']) == SCENE_HW and out['classes'][0] == 'circle'
    found = out['instances']
    assert len(found) == 70 and {'bbox', 'score', 'category_id', 'category',
                                 'segmentation'} <= found[0].keys()
    assert cv2.imread(row['overlay']).shape == (132, 200, 3)
    assert re.search(r'(\d+)/\1, ', proc.stderr), proc.stderr[-2000:]  # the bar, finished

    model = init_detector(str(REPO / DET_DEMO), str(det_ckpt), device='cpu',
                          cfg_options={'model.test_cfg.rcnn.score_thr': 0,
                                       'model.test_cfg.rcnn.max_per_img': 70})
    for t in model.cfg.test_dataloader.dataset.pipeline:
        if t['type'] == 'Resize':  # the image at its own size, scale factor 1
            t.update(scale=SCENE_HW[::-1], keep_ratio=False)
    model.cfg.test_pipeline = model.cfg.test_dataloader.dataset.pipeline
    with torch.no_grad():
        want = inference_detector(model, str(scene)).pred_instances
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d['bbox'] for d in found)]
    np.testing.assert_allclose(xyxy, want.bboxes.numpy(), rtol=1e-4, atol=0.02)  # rounded
    assert [d['category_id'] for d in found] == want.labels.tolist()
    masks = np.stack([mask_util.decode(d['segmentation']) for d in found]).astype(bool)
    assert masks.shape == (70,) + SCENE_HW
    assert (masks == want.masks.numpy()).mean() >= 0.999


def test_command_stopped_by_sigterm_leaves_nothing_behind(demo_ckpt, tmp_path):
    """A scheduler's time limit (SIGTERM) mid-run: the partial label TIFF and
    the spilled token files are removed, and the tool says it stopped."""
    import signal
    import subprocess
    import time

    from tests.tool_runner import tool_command, tool_env
    image = tmp_path / 'big.tif'
    rgb = np.random.default_rng(0).integers(0, 256, (1536, 1536, 3), dtype=np.uint8)
    tifffile.imwrite(image, rgb, photometric='rgb', tile=(256, 256))
    out, scratch = tmp_path / 'out', tmp_path / 'scratch'
    scratch.mkdir()
    proc = subprocess.Popen(
        tool_command('infer_large.py', DEMO, demo_ckpt, image, '--out-dir', out,
                     '--token-device', 'disk', '--scratch-dir', scratch, '--band-rows', 16),
        cwd=str(REPO), env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 120
    while not any(scratch.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the token files' folder: the backbone has begun
    assert proc.poll() is None, 'the run ended before it could be stopped'
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert 'infer_large: stopped (SIGTERM)' in err and 'Traceback' not in err
    assert list(scratch.iterdir()) == []
    assert not out.exists() or list(out.iterdir()) == []
