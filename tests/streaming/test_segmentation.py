"""Streamed whole-image segmentation equals whole-image segmentation.

UperNet (patch 16 and patch 8) and Semantic FPN with UFO-ViT backbones,
random weights and random BatchNorm statistics, on images whose sides are
multiples of neither 32 nor the band, in bands small enough to force dozens
of them: the logits within 1e-4 of the largest (fp32) and the labels on at
least 99.9 % of the pixels, against mmseg's own whole-image path
(``EncoderDecoder.inference`` / ``predict``, ``mmseg.apis.inference_model``
with no resize in the test pipeline). Also: the test mode 'stream' of
``StreamingEncoderDecoder``, 16-bit labels past 255 classes, padding by the
data preprocessor, and the errors.
"""
import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict

from tests.streaming.helpers import randomise_bn
from ufo_mm.engine.distributed import sync_bn_to_bn as no_sync_bn
from ufo_mm.streaming.inputs import tensor_source
from ufo_mm.streaming.predict import predict, segment_large

REPO = __import__('pathlib').Path(__file__).resolve().parents[2]
UPERNET = REPO / 'configs/ufo_vit/upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'
SEM_FPN = REPO / 'configs/ufo_vit/sem_fpn/fpn_ufo-vit-s12-p16_8xb2-80k_ade20k-512x512.py'
DEMO = REPO / 'configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py'
SMALL = dict(embed_dims=64, num_heads=4, depth=4, patch_size=16, out_indices=(0, 1, 2, 3))
HW = (229, 301)  # multiples of neither 32 nor the bands below
BANDS = dict(band_rows=13, tokens_per_band=40)


def small_cfg(path, num_classes=19, **backbone):
    cfg = Config.fromfile(str(path))
    no_sync_bn(cfg.model)
    cfg.model.backbone.update(arch=SMALL, **backbone)
    cfg.model.pretrained = None
    if 'neck' in cfg.model:
        cfg.model.neck.in_channels = [64] * 4
    else:
        cfg.model.decode_head.in_channels = [64] * 4
        cfg.model.decode_head.channels = 64
    cfg.model.decode_head.num_classes = num_classes
    if 'auxiliary_head' in cfg.model:
        cfg.model.auxiliary_head.update(in_channels=64, num_classes=num_classes)
    return cfg


def build(cfg):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    return randomise_bn(MODELS.build(cfg.model))


def assert_same_prediction(logits, ref_logits, labels, ref_labels):
    assert logits.shape == ref_logits.shape
    scale = ref_logits.abs().max()
    assert (logits - ref_logits).abs().max() <= 1e-4 * scale
    assert labels.shape == ref_labels.shape
    assert (labels == ref_labels).float().mean() >= 0.999


@pytest.fixture(scope='module')
def image():
    torch.manual_seed(1)
    return torch.randn(1, 3, *HW)


@pytest.mark.parametrize('config,backbone', [(UPERNET, {}), (SEM_FPN, {}),
                                             (UPERNET, dict(patch_size=8))],
                         ids=['upernet-p16', 'semantic-fpn-p16', 'upernet-p8'])
def test_streamed_equals_whole_image_inference(config, backbone, image):
    cfg = small_cfg(config)
    if backbone:
        cfg.model.backbone.arch = dict(SMALL, **backbone)
    model = build(cfg)
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    with torch.no_grad():
        ref = model.inference(image, [meta])  # mmseg's whole mode
        labels, logits = predict(model, tensor_source(image), 3, meta, with_logits=True,
                                 **BANDS)
    assert_same_prediction(logits, ref, labels, ref.argmax(1))


def test_test_mode_stream_of_the_registered_segmentor(image):
    """StreamingEncoderDecoder with test_cfg mode 'stream' through predict():
    the data samples mmseg's evaluators read, as mode 'whole' fills them."""
    from mmseg.structures import SegDataSample
    cfg = small_cfg(UPERNET)
    assert cfg.model.type == 'StreamingEncoderDecoder'  # the shipped configs use it
    model = build(cfg)
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    with torch.no_grad():
        whole = model.predict(image, [SegDataSample(metainfo=meta)])[0]
        model.test_cfg = ConfigDict(mode='stream', return_logits=True, **BANDS)
        stream = model.predict(image, [SegDataSample(metainfo=meta)])[0]
        model.test_cfg = ConfigDict(mode='stream')
        lean = model.predict(image, [SegDataSample(metainfo=meta)])[0]
    assert stream.pred_sem_seg.data.shape == whole.pred_sem_seg.data.shape == (1,) + HW
    assert stream.pred_sem_seg.data.dtype == whole.pred_sem_seg.data.dtype
    assert_same_prediction(stream.seg_logits.data, whole.seg_logits.data,
                           stream.pred_sem_seg.data, whole.pred_sem_seg.data)
    assert 'seg_logits' not in lean  # no (classes, H, W) floats unless asked
    assert torch.equal(lean.pred_sem_seg.data, stream.pred_sem_seg.data)
    model.test_cfg = ConfigDict(mode='stream', crop_size=(5, 5))
    with pytest.raises(KeyError, match='crop_size'):
        model.predict(image, [SegDataSample(metainfo=meta)])


@pytest.mark.parametrize('config', [DEMO, SEM_FPN], ids=['demo-upernet-p8', 'semantic-fpn'])
def test_segment_large_equals_mmseg_inference_model(config, tmp_path):
    """An image file through mmseg's own inference_model (its test pipeline with
    no resize) and through segment_large on the same pixels."""
    from mmseg.apis import inference_model, init_model
    cfg = small_cfg(config, num_classes=9) if config != DEMO else Config.fromfile(str(config))
    no_sync_bn(cfg.model)
    cfg.test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
    cfg.test_dataloader.dataset.pipeline = cfg.test_pipeline
    model = randomise_bn(init_model(cfg, checkpoint=None, device='cpu'))
    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 256, HW + (3,), dtype=np.uint8), (7, 7), 2)
    path = str(tmp_path / 'scene.png')
    cv2.imwrite(path, img)
    with torch.no_grad():
        ref = inference_model(model, path).pred_sem_seg.data[0].numpy()
    labels = segment_large(model, cv2.imread(path), band_rows=11, tokens_per_band=60)
    assert labels.dtype == np.uint8 and labels.shape == HW
    assert (labels == ref).mean() >= 0.999


def test_labels_are_16_bit_past_255_classes_and_padding_is_undone(image):
    cfg = small_cfg(SEM_FPN, num_classes=300)
    cfg.model.data_preprocessor.test_cfg = dict(size_divisor=32)  # pads 229x301 to 256x320
    model = build(cfg)
    img = np.random.default_rng(3).integers(0, 256, HW + (3,), dtype=np.uint8)
    from mmseg.structures import SegDataSample
    with torch.no_grad():
        data = dict(inputs=[torch.from_numpy(img).permute(2, 0, 1)],
                    data_samples=[SegDataSample(metainfo=dict(ori_shape=HW, img_shape=HW))])
        ref = model.test_step(data)[0].pred_sem_seg.data[0].numpy()
    labels = segment_large(model, img, **BANDS)
    assert labels.dtype == np.uint16 and labels.shape == HW
    assert labels.max() > 255  # the values past 8 bits survive
    assert (labels == ref).mean() >= 0.999


def test_refusals(image):
    from mmseg.structures import SegDataSample
    cfg = small_cfg(UPERNET)
    model = build(cfg)
    with pytest.raises(ValueError, match='NaN'):
        bad = image.clone()
        bad[0, 0, 100, 7] = float('nan')
        predict(model, tensor_source(bad), 3, None, **BANDS)
    with pytest.raises(NotImplementedError, match='flip'):
        model.test_cfg = ConfigDict(mode='stream')
        model.predict(image, [SegDataSample(metainfo=dict(
            ori_shape=HW, img_shape=HW, flip=True, flip_direction='horizontal'))])
    with pytest.raises(ValueError, match='uint8'):
        segment_large(model, np.zeros(HW + (3,), np.float32))
    model.train()
    with pytest.raises(RuntimeError, match='eval mode'):
        predict(model, tensor_source(image), 3, None)
    cfg.model.backbone.attn_type = 'softmax'
    with pytest.raises(ValueError, match='UFO attention'):
        predict(build(cfg), tensor_source(image), 3, None)


@pytest.mark.parametrize('name', ['bf16', 'fp16'])
def test_compact_token_storage_is_close(image, name):
    """Tokens stored in 16 bits (the largest images' memory halved): the
    labels still agree on nearly every pixel, the logits within 16-bit
    rounding of whole-image's."""
    from ufo_mm.streaming.inputs import token_dtype
    model = build(small_cfg(UPERNET))
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    with torch.no_grad():
        ref = model.inference(image, [meta])
        labels, logits = predict(model, tensor_source(image), 3, meta, with_logits=True,
                                 token_dtype=token_dtype(name), **BANDS)
    err = (logits - ref).abs().max() / ref.abs().max()
    assert 1e-6 < err < 0.05  # rounded, but only by the storage
    assert (labels == ref.argmax(1)).float().mean() >= 0.97
    with pytest.raises(ValueError, match='token dtype'):
        token_dtype('int8')


HEADS = {
    'fcn': dict(type='FCNHead', in_index=3, channels=32, num_convs=2, kernel_size=3,
                concat_input=True, dilation=2),
    'fcn-resize-concat': dict(type='FCNHead', in_index=(0, 1, 2, 3), in_channels=[64] * 4,
                              input_transform='resize_concat', channels=32, num_convs=1,
                              concat_input=False, align_corners=True),
    'aspp': dict(type='ASPPHead', in_index=3, channels=32, dilations=(1, 2, 3)),
}


@pytest.mark.parametrize('name', list(HEADS))
def test_heads_added_by_one_table_entry_stream_exactly(name, image):
    """FCNHead and ASPPHead (DeepLabV3), registered with stream_head (the worked
    example of docs/large_images.md), equal mmseg's whole-image inference."""
    from ufo_mm.streaming.heads import DECODE_HEADS
    cfg = small_cfg(UPERNET)
    head = dict(in_channels=64, num_classes=7, norm_cfg=dict(type='BN', requires_grad=True),
                dropout_ratio=0.1, align_corners=False)
    head.update(HEADS[name])
    cfg.model.decode_head = ConfigDict(head)
    cfg.model.auxiliary_head = None
    model = build(cfg)
    assert type(model.decode_head).__name__ in DECODE_HEADS
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    with torch.no_grad():
        ref = model.inference(image, [meta])
        labels, logits = predict(model, tensor_source(image), 3, meta, with_logits=True,
                                 **BANDS)
    assert_same_prediction(logits, ref, labels, ref.argmax(1))


def test_a_head_without_an_entry_is_refused_naming_the_supported_ones(image):
    cfg = small_cfg(UPERNET)
    cfg.model.decode_head = ConfigDict(type='PSPHead', in_channels=64, in_index=3, channels=32,
                                       num_classes=7, norm_cfg=dict(type='BN'))
    cfg.model.auxiliary_head = None
    model = build(cfg)
    with pytest.raises(NotImplementedError, match='decode head PSPHead does not stream; '
                       'supported: ASPPHead, FCNHead, FPNHead, UPerHead'):
        predict(model, tensor_source(image), 3, None, **BANDS)


@pytest.fixture(scope='module')
def padded_fpn():
    """Semantic FPN whose data preprocessor pads 229 x 301 to 256 x 320."""
    cfg = small_cfg(SEM_FPN, num_classes=7)
    cfg.model.data_preprocessor.test_cfg = dict(size_divisor=32)
    return build(cfg).eval()


@pytest.mark.parametrize('layout', ['tiled', 'striped'])
def test_a_tiff_read_band_by_band_gives_the_labels_of_the_array(padded_fpn, tmp_path, layout):
    """segment_large on an opened TIFF (rows read as the patch embedding needs
    them) equals segment_large on the decoded array; no read holds more than
    a band of rows."""
    import tifffile

    from ufo_mm.io.rasters import open_raster
    rgb = cv2.GaussianBlur(np.random.default_rng(5).integers(0, 256, HW + (3,), np.uint8),
                           (5, 5), 2)
    path = tmp_path / 'scene.tif'
    kw = dict(tile=(32, 48)) if layout == 'tiled' else dict(rowsperstrip=7)
    tifffile.imwrite(path, rgb, photometric='rgb', compression='zlib', **kw)
    ref = segment_large(padded_fpn, np.ascontiguousarray(rgb[..., ::-1]), **BANDS)
    with open_raster(path) as src:
        asked = []
        read = src.read_rows
        src.read_rows = lambda a, b, **kw: asked.append((a, b)) or read(a, b, **kw)
        labels = segment_large(padded_fpn, src, **BANDS)
    assert np.array_equal(labels, ref)
    assert max(b - a for a, b in asked) < HW[0] // 2
    rows = sorted(asked)
    assert rows[0][0] == 0 and rows[-1][1] == HW[0]  # every row read, once
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(rows, rows[1:]))


def test_labels_handed_band_by_band_to_a_sink(padded_fpn):
    img = np.random.default_rng(6).integers(0, 256, HW + (3,), np.uint8)
    ref = segment_large(padded_fpn, img, **BANDS)
    got = []
    assert segment_large(padded_fpn, img, labels_sink=lambda a, b, rows: got.append(
        (a, b, rows.copy())), **BANDS) is None
    assert [a for a, _, _ in got] == list(range(0, HW[0], BANDS['band_rows']))
    assert all(rows.shape == (b - a, HW[1]) and rows.dtype == np.uint8 for a, b, rows in got)
    assert np.array_equal(np.concatenate([rows for _, _, rows in got]), ref)


def test_a_budget_thins_the_default_bands_to_fit_and_the_labels_stay(image, monkeypatch):
    """Without ``band_rows``, a memory budget too small for the default bands
    of the heads gets the tallest bands that fit it, not an error; the labels
    are those of the default bands. Given ``band_rows`` are kept (and refused
    when they do not fit)."""
    from ufo_mm.analysis import process_stats
    from ufo_mm.streaming.predict import (MIN_BAND_ROWS, budget_band_rows, default_band_rows,
                                          head_band_bytes)
    model = build(small_cfg(UPERNET))
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    K = model.decode_head.out_channels
    rows = default_band_rows(torch.device('cpu'), K, HW[1])
    assert rows >= MIN_BAND_ROWS
    assert default_band_rows(torch.device('cpu'), 150, 65536) == MIN_BAND_ROWS
    thin = 5
    assert thin < rows
    monkeypatch.setattr(process_stats, 'rss_bytes', lambda: 2**30)  # 1 GiB held
    labels_bytes = 8 * HW[0] * HW[1]  # int64, gathered whole
    budget = 2**30 + labels_bytes + head_band_bytes(model, thin, HW[1])
    assert budget_band_rows(model, rows, HW[1], budget - 2**30 - labels_bytes) == thin
    assert budget_band_rows(model, rows, HW[1], 0) == 1
    kw = dict(tokens_per_band=40)
    with torch.no_grad():
        ref, _ = predict(model, tensor_source(image), 3, meta, **kw)
        info = {}
        labels, _ = predict(model, tensor_source(image), 3, meta, max_ram_gb=budget / 2**30,
                            info=info, **kw)
        assert info['band_rows'] == thin and torch.equal(labels, ref)
        info = {}
        predict(model, tensor_source(image), 3, meta, max_ram_gb=2 * budget / 2**30, info=info,
                **kw)
        assert info['band_rows'] > thin
        with pytest.raises(MemoryError, match='too small for one band'):
            predict(model, tensor_source(image), 3, meta, max_ram_gb=budget / 2**30,
                    band_rows=rows, **kw)


@pytest.mark.parametrize('dtype', [None, 'bf16'])
def test_tokens_spilled_to_disk_give_the_same_labels(image, tmp_path, monkeypatch, dtype):
    """A memory budget the tokens do not fit sends them to files in the
    scratch folder: labels and logits equal to the in-memory run's, in the
    same token dtype; the folder is left empty. A budget below one band's
    needs is refused, naming the minimum."""
    from ufo_mm.analysis import process_stats
    from ufo_mm.streaming.backbone import StreamedUFOViT
    from ufo_mm.streaming.inputs import token_dtype
    from ufo_mm.streaming.predict import head_band_bytes
    model = build(small_cfg(UPERNET))
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    kw = dict(with_logits=True, token_dtype=token_dtype(dtype), **BANDS)
    streamed = StreamedUFOViT(model.backbone, BANDS['tokens_per_band'],
                              token_dtype=token_dtype(dtype))
    # 1 GiB held, whatever the test process holds, plus a band and the int64
    # label map (gathered whole here), plus the tokens
    monkeypatch.setattr(process_stats, 'rss_bytes', lambda: 2**30)
    minimum = 2**30 + max(streamed.band_bytes(),
                          head_band_bytes(model, BANDS['band_rows'], HW[1]) + 8 * HW[0] * HW[1])
    tokens = streamed.token_bytes(HW)
    with torch.no_grad():
        for budget, place in ((None, 'compute'), (minimum + tokens, 'compute'),
                              (minimum + tokens - 1, 'disk'), (minimum, 'disk')):
            info = {}
            labels, logits = predict(
                model, tensor_source(image), 3, meta, info=info, scratch_dir=tmp_path,
                max_ram_gb=None if budget is None else budget / 2**30, **kw)
            assert info['token_place'] == place
            if budget is None:
                ref, ref_logits = labels, logits
            assert torch.equal(labels, ref) and torch.equal(logits, ref_logits)
        with pytest.raises(MemoryError, match=f'too small for one band: this run needs at '
                           f'least {minimum / 2**30:.2f} GiB'):
            predict(model, tensor_source(image), 3, meta, max_ram_gb=(minimum - 1) / 2**30,
                    **kw)
    assert list(tmp_path.iterdir()) == []


def test_freed_buffers_kept_only_where_a_band_leaves_room_in_the_budget(image, monkeypatch):
    """The C heap keeps a band's freed buffers for the next band without a
    budget and where the held memory and one band stay under ``TRIM_AT`` of
    it; a band filling the budget past that runs without (the kept blocks
    would push it over: Semantic FPN at 32768 px wide in 4 GiB). The labels
    are the same either way."""
    import contextlib

    from ufo_mm.analysis import process_stats
    from ufo_mm.streaming import predict as predict_module
    from ufo_mm.streaming.predict import TRIM_AT, head_band_bytes
    model = build(small_cfg(UPERNET))
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    entered = []

    @contextlib.contextmanager
    def recorded():
        entered.append(True)
        yield

    monkeypatch.setattr(process_stats, 'rss_bytes', lambda: 2**30)  # 1 GiB held
    monkeypatch.setattr(process_stats, 'freed_buffers_kept', recorded)
    band = head_band_bytes(model, BANDS['band_rows'], HW[1]) + 8 * HW[0] * HW[1]
    roomy = (2**30 + band) / TRIM_AT + 2**20  # held and a band under TRIM_AT of it
    tight = (2**30 + band) / TRIM_AT - 2**20  # fits, but past TRIM_AT
    runs = {}
    with torch.no_grad():
        for name, budget in (('none', None), ('roomy', roomy), ('tight', tight)):
            entered.clear()
            labels, _ = predict_module.predict(
                model, tensor_source(image), 3, meta,
                max_ram_gb=None if budget is None else budget / 2**30, **BANDS)
            runs[name] = (bool(entered), labels)
    assert {k: kept for k, (kept, _) in runs.items()} == dict(none=True, roomy=True, tight=False)
    assert torch.equal(runs['tight'][1], runs['none'][1])
    assert torch.equal(runs['roomy'][1], runs['none'][1])
