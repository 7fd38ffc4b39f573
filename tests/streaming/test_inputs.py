"""What a streamed prediction is given (ufo_mm/streaming/inputs.py): one
reading of ``test_cfg`` for the segmentor and the detector alike (the same
errors for the same mistakes, each model's own keys), the options as a
:class:`StreamConfig`, and the rows of an image.
"""
import re

import numpy as np
import pytest
import torch

from ufo_mm.streaming.inputs import (DETECTOR, SEGMENTOR, StreamConfig, array_source,
                                     stream_config, tensor_source, token_dtype)

REPO = __import__('pathlib').Path(__file__).resolve().parents[2]
SEG_DEMO = REPO / 'configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py'
DET_DEMO = REPO / 'configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py'
HEADS = dict(rpn=dict(nms_pre=1000), rcnn=dict(score_thr=0.05))  # mmdet's, read by its heads


@pytest.fixture(scope='module')
def models():
    """(segmentor, detector, their predict(test_cfg)) of the demo configs:
    each model's own predict entry, with a test_cfg that is given to it."""
    from mmdet.apis import init_detector
    from mmdet.structures import DetDataSample
    from mmseg.apis import init_model
    from mmseg.structures import SegDataSample
    segmentor = init_model(str(SEG_DEMO), None, device='cpu')
    with pytest.warns(UserWarning):  # "checkpoint is None, use COCO classes by default"
        detector = init_detector(str(DET_DEMO), None, device='cpu')
    inputs = torch.zeros(1, 3, 32, 32)
    meta = dict(img_shape=(32, 32), ori_shape=(32, 32), pad_shape=(32, 32),
                batch_input_shape=(32, 32), scale_factor=(1.0, 1.0))

    def segment(test_cfg):
        segmentor.test_cfg = test_cfg
        segmentor.predict(inputs, [SegDataSample(metainfo=meta)])

    def detect(test_cfg):
        detector.test_cfg = dict(HEADS, **test_cfg)
        detector.predict(inputs, [DetDataSample(metainfo=meta)])
    return dict(segmentor=segment, detector=detect)


def refusal(run, test_cfg, error):
    with pytest.raises(error) as e:
        run(test_cfg)
    return str(e.value).strip('"')


@pytest.mark.parametrize('test_cfg,error,message', [
    (dict(mode='stream', tile_size=64), KeyError,
     r"test_cfg keys \['tile_size'\] have no meaning in mode stream; valid: mode, "),
    (dict(mode='stream', token_dtype='int8'), ValueError,
     'token dtype must be one of fp32, bf16, fp16'),
    (dict(mode='tiles'), ValueError, "test_cfg.mode must be 'whole'.* or 'stream', got 'tiles'"),
], ids=['unknown-key', 'token-dtype', 'mode'])
def test_segmentor_and_detector_refuse_the_same_mistake_alike(models, test_cfg, error, message):
    """The same bad test_cfg: the same error from both, before any compute;
    for an unknown key the same message up to the list of valid keys (each
    model's own)."""
    seg = refusal(models['segmentor'], test_cfg, error)
    det = refusal(models['detector'], test_cfg, error)
    assert re.match(message, seg) and re.match(message, det), (seg, det)
    if error is KeyError:
        assert seg.split('valid: ')[0] == det.split('valid: ')[0]
        assert seg.split('valid: ')[1] == ', '.join(('mode',) + SEGMENTOR.options)
        assert det.split('valid: ')[1] == ', '.join(('mode',) + DETECTOR.head_keys +
                                                    DETECTOR.options)
    else:
        assert seg.split(', got')[1:] == det.split(', got')[1:]


def test_each_model_refuses_the_others_options(models):
    assert 'mask_format' in refusal(models['segmentor'], dict(mode='stream', mask_format='rle'),
                                    KeyError)
    assert 'return_logits' in refusal(models['detector'],
                                      dict(mode='stream', return_logits=True), KeyError)
    assert 'rpn' in refusal(models['segmentor'], dict(mode='stream', rpn={}), KeyError)
    assert "'bitmap' or 'rle', got 'png'" in refusal(
        models['detector'], dict(mode='stream', mask_format='png'), ValueError)


def test_stream_config_reads_the_options_and_leaves_the_own_modes_alone():
    assert stream_config(None, SEGMENTOR) is None  # mmseg's default mode, whole
    assert stream_config(dict(mode='slide', crop_size=(5, 5)), SEGMENTOR) is None
    assert stream_config(dict(HEADS), DETECTOR) is None
    with pytest.raises(ValueError, match="must be 'whole' or 'stream', got 'slide'"):
        stream_config(dict(mode='slide'), DETECTOR)
    cfg = dict(mode='stream', band_rows=8, token_dtype='bf16', token_device='cpu')
    seg, det = stream_config(cfg, SEGMENTOR), stream_config(dict(HEADS, **cfg), DETECTOR)
    assert seg == det == StreamConfig(band_rows=8, token_dtype=torch.bfloat16,
                                      token_device='cpu')
    none = dict(mode='stream', band_rows=None, return_logits=None, max_ram_gb=None)
    assert stream_config(none, SEGMENTOR) == StreamConfig()  # None: the default
    assert StreamConfig().mask_format == 'bitmap' and StreamConfig().return_logits is False
    with pytest.raises(ValueError, match='token dtype'):
        StreamConfig(token_dtype='int8')


def test_token_dtype_names():
    assert [token_dtype(n) for n in ('fp32', 'bf16', 'fp16', None)] == \
        [torch.float32, torch.bfloat16, torch.float16, None]
    assert token_dtype(torch.float16) is torch.float16


def test_sources_give_the_rows_asked_for():
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    node = tensor_source(x)
    assert tuple(node.size) == (5, 4) and torch.equal(node.compute(1, 3), x[:, :, 1:3])
    with pytest.raises(ValueError, match='NaN'):
        tensor_source(x.masked_fill(x == 13, float('nan'))).compute(0, 5)

    class Preprocessor:  # mmseg's: normalise, BGR -> RGB, pad to a multiple of 8
        _enable_normalize, channel_conversion, pad_val = True, True, 0
        mean, std = torch.tensor([1.0, 2, 3])[:, None, None], torch.full((3, 1, 1), 2.0)
        test_cfg = dict(size_divisor=8)
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    node, padded = array_source(image, Preprocessor())
    assert padded == (8, 8) and tuple(node.size) == (8, 8)
    rows = node.compute(0, 8)[0]
    want = (torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1).float() -
            Preprocessor.mean) / Preprocessor.std
    assert torch.equal(rows[:, :5, :6], want) and not rows[:, 5:].any() and \
        not rows[:, :, 6:].any()
