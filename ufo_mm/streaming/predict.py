"""Streamed semantic segmentation with a UFO-ViT segmentor: labels of every
pixel, written band by band, equal to the segmentor's whole-image prediction.

What mmseg's ``EncoderDecoder.predict`` does in 'whole' mode, in bands:
backbone (:class:`.backbone.StreamedUFOViT`), neck and decode head
(:mod:`.heads`), the resize of the logits to the (padded) input size, the
crop of the padding, the resize to the original size, and the argmax (or the
threshold of a one-channel head). The (classes, H, W) logits exist one band at
a time; only the label map is whole.

:func:`segment_large` is the entry for an image in memory (a uint8 array):
it normalises the rows with the segmentor's data preprocessor as they are
needed, so no float copy of the image exists either.
"""
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from . import bands, heads
from .backbone import StreamedUFOViT

#: bytes of one band of full-resolution logits (the band height follows from
#: it), on the CPU and on a GPU (larger bands: fewer, longer kernels)
LOGITS_BAND_BYTES = 64 << 20
LOGITS_BAND_BYTES_CUDA = 1 << 30


def default_band_rows(device: torch.device, classes: int, width: int) -> int:
    """Output rows per band: ``LOGITS_BAND_BYTES`` (on a GPU
    ``LOGITS_BAND_BYTES_CUDA``) of float32 logits ``width`` pixels wide."""
    budget = LOGITS_BAND_BYTES_CUDA if torch.device(device).type == 'cuda' else LOGITS_BAND_BYTES
    return max(1, budget // (4 * classes * width))


#: names of the token storage dtypes (``--token-dtype``, ``test_cfg.token_dtype``)
TOKEN_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def token_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """'fp32' / 'bf16' / 'fp16' (or None) -> the torch dtype."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in TOKEN_DTYPES:
        raise ValueError(f'token dtype must be one of {", ".join(TOKEN_DTYPES)}, got {name!r}')
    return TOKEN_DTYPES[name]


def output_geometry(meta: dict, input_size: Sequence[int]):
    """(size the logits are resized to, padding (left, right, top, bottom),
    original size) of one image, as mmseg's ``predict_by_feat`` and
    ``postprocess_result`` read them from its meta information."""
    if not meta:
        return tuple(input_size), (0, 0, 0, 0), tuple(input_size)
    if isinstance(meta['img_shape'], torch.Size):
        size = meta['img_shape']
    elif 'pad_shape' in meta:
        size = meta['pad_shape'][:2]
    else:
        size = meta['img_shape']
    padding = meta.get('img_padding_size', meta.get('padding_size', [0] * 4))
    if meta.get('flip'):
        raise NotImplementedError('streamed inference does not undo flips (test-time '
                                  'augmentation); use mode whole for it')
    return tuple(int(s) for s in size), tuple(int(p) for p in padding), \
        tuple(int(s) for s in meta.get('ori_shape', size)[:2])


class Progress:
    """Counts units of work, reporting ``progress(done, total)``."""

    def __init__(self, total: int, progress: Optional[Callable[[int, int], None]]):
        self.done, self.total, self.progress = 0, total, progress

    def tick(self):
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def predict(segmentor, image: bands.Node, channels: int, meta: Optional[dict] = None,
            band_rows: Optional[int] = None, tokens_per_band: Optional[int] = None,
            labels_dtype: torch.dtype = torch.int64, with_logits: bool = False,
            progress: Optional[Callable[[int, int], None]] = None,
            token_dtype: Optional[torch.dtype] = None, token_device=None,
            labels_device: Optional[torch.device] = None, info: Optional[dict] = None
            ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Labels (B, H, W) of ``image``, a band node of normalised (B, channels,
    H, W) inputs, and the full-size logits (B, classes, H, W) if
    ``with_logits`` (what mmseg keeps as ``seg_logits``: sigmoid for a
    one-channel head), else None.

    ``meta``: the image's meta information (mmseg's ``metainfo``: img_shape,
    pad_shape, padding_size, ori_shape); None for an unpadded image.
    ``band_rows``: output rows per band (default: 64 MB of logits, 1 GB on a GPU).
    ``progress(done, total)``: called as the work advances.
    ``token_dtype``: storage of the backbone's token tensors (see
    :class:`.backbone.StreamedUFOViT`; bf16 halves the largest part of the
    memory, and the result is then close to, not equal to, whole-image's).
    ``token_device``: where those tensors live ('auto', the model's device
    or 'cpu'; see :class:`.backbone.StreamedUFOViT`).
    ``labels_device``: where the labels are gathered (default: the model's
    device on the CPU; on a GPU the host, each band's labels copied back as
    they are made, in ``labels_dtype``).
    ``info``: a dict that receives ``token_place`` ('compute' or 'host':
    where the token tensors lived) and ``band_rows``.

    Every band is computed on the segmentor's device (its parameters').
    """
    size, (left, right, top, bottom), ori = output_geometry(meta or {}, image.size)
    head = segmentor.decode_head
    ac = head.align_corners
    streamed = StreamedUFOViT(segmentor.backbone, tokens_per_band, token_dtype=token_dtype,
                              token_device=token_device)
    device = streamed.device
    cuda = device.type == 'cuda'
    if labels_device is None:
        labels_device = torch.device('cpu')
    B, K = 1, head.out_channels
    if band_rows is None:
        band_rows = default_band_rows(device, K, ori[1])
    n_bands = -(-ori[0] // band_rows)
    counter = Progress(streamed.work(image.size) + n_bands, progress)
    streamed.tick = counter.tick

    logits = heads.decode(segmentor, streamed(image, channels))
    if info is not None:
        info.update(token_place=streamed.store.place, band_rows=band_rows)
    out = bands.Resize(logits, size=size, mode='bilinear', align_corners=ac)
    if left or right or top or bottom:
        out = bands.Crop(out, (out.height - top - bottom, out.width - left - right), top, left)
    out = bands.Resize(out, size=ori, mode='bilinear', align_corners=ac)

    labels = full_logits = None

    def sink(a, b, rows):
        nonlocal labels, full_logits, B
        if labels is None:
            B = rows.shape[0]
            pin = cuda and labels_device.type == 'cpu'
            labels = torch.empty((B,) + ori, dtype=labels_dtype, device=labels_device,
                                 pin_memory=pin)
            if with_logits:
                full_logits = rows.new_empty((B, K) + ori)
        if K > 1:
            band = rows.argmax(dim=1).to(labels_dtype)
        else:
            rows = rows.sigmoid()
            band = (rows[:, 0] > head.threshold).to(labels_dtype)
        # from a GPU into pinned memory: asynchronous, the next band is queued meanwhile
        labels[:, a:b].copy_(band, non_blocking=cuda)
        if with_logits:
            full_logits[:, :, a:b] = rows
        counter.tick()
    with torch.no_grad():
        bands.evaluate(out, band_rows, sink)
    if cuda:
        torch.cuda.synchronize(device)
    return labels, full_logits


def tensor_source(inputs: torch.Tensor, check_finite: bool = True) -> bands.Node:
    """Rows of an already normalised (B, C, H, W) input batch (on its device)."""
    def rows(a, b):
        x = inputs[:, :, a:b]
        if check_finite and not torch.isfinite(x).all():
            raise ValueError(f'UFOViT input contains NaN or Inf values (rows {a}..{b - 1})')
        return x
    return bands.Source(rows, inputs.shape[-2:])


def array_source(image: np.ndarray, data_preprocessor, device=None
                 ) -> Tuple[bands.Node, Tuple[int, int]]:
    """Normalised rows of a (H, W, 3) uint8 image (BGR, as mmseg and mmdet
    load it), made by the model's data preprocessor's rules (channel conversion,
    mean / std, test-time padding to ``size`` / ``size_divisor``) as they are
    needed, on ``device`` (default: the CPU; the uint8 rows are copied there
    and converted there). Returns the node and the padded size."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f'expected a (H, W, C) uint8 image, got {image.dtype} of shape '
                         f'{image.shape}')
    H, W = image.shape[:2]
    dp = data_preprocessor
    mean = getattr(dp, 'mean', None) if getattr(dp, '_enable_normalize', False) else None
    std = getattr(dp, 'std', None) if mean is not None else None
    # mmseg's SegDataPreProcessor / mmengine's ImgDataPreprocessor (mmdet's)
    flip = getattr(dp, 'channel_conversion', getattr(dp, '_channel_conversion', False))
    cfg = getattr(dp, 'test_cfg', None) or {}
    Hp, Wp = H, W
    divisor = cfg.get('size_divisor') or getattr(dp, 'pad_size_divisor', 1)
    if cfg.get('size'):
        Hp, Wp = max(H, cfg['size'][0]), max(W, cfg['size'][1])
    elif divisor > 1:
        Hp, Wp = -(-H // divisor) * divisor, -(-W // divisor) * divisor
    pad_val = float(getattr(dp, 'pad_val', getattr(dp, 'pad_value', 0)))
    device = torch.device(device or 'cpu')
    if mean is not None:
        mean, std = mean.to(device), std.to(device)

    def rows(a, b):
        x = torch.from_numpy(image[a:min(b, H)])  # (r, W, C) uint8, a view
        if device.type != 'cpu':
            x = x.to(device)
        if flip:
            x = x.flip(-1)
        x = x.permute(2, 0, 1).float()
        if mean is not None:
            x = (x - mean) / std
        if b > H or Wp > W:
            x = torch.nn.functional.pad(x, (0, Wp - W, 0, max(b - H, 0)), value=pad_val)
        return x[None]
    return bands.Source(rows, (Hp, Wp)), (Hp, Wp)


def segment_large(model, image_bgr: np.ndarray, band_rows: Optional[int] = None,
                  progress: Optional[Callable[[int, int], None]] = None,
                  tokens_per_band: Optional[int] = None,
                  token_dtype: Optional[torch.dtype] = None,
                  token_device=None, info: Optional[dict] = None) -> np.ndarray:
    """Labels of every pixel of ``image_bgr`` ((H, W, 3) uint8, BGR as mmseg's
    ``LoadImageFromFile`` gives), at its own size, by an mmseg segmentor
    with a UFOViT backbone (e.g. from ``mmseg.apis.init_model``).

    Returns (H, W) uint8 when the model has at most 255 classes, else
    uint16. Equal to the segmentor's whole-image prediction of the image
    with no resize; memory is the image, the labels, the backbone's tokens
    and one band of the heads (see docs/large_images.md). ``token_dtype``
    (e.g. ``torch.bfloat16``) stores the tokens in half the memory, at the
    price of exactness.

    It runs on the model's device: on a GPU every band is computed there,
    the uint8 image rows go up and the labels come back band by band, and
    the backbone's token tensors stay on the GPU where they fit
    (``token_device``: 'auto', 'cuda' or 'cpu'; see
    :class:`.backbone.StreamedUFOViT`). ``info``: see :func:`predict`.
    """
    model.eval()
    device = next(model.parameters()).device
    source, padded = array_source(image_bgr, model.data_preprocessor, device)
    H, W = image_bgr.shape[:2]
    meta = dict(img_shape=padded, pad_shape=padded, ori_shape=(H, W),
                padding_size=[0, padded[1] - W, 0, padded[0] - H])
    K = model.decode_head.out_channels
    dtype = torch.uint8 if K <= 255 else torch.int16  # int16 bits read as uint16
    labels, _ = predict(model, source, image_bgr.shape[2], meta, band_rows, tokens_per_band,
                        labels_dtype=dtype, progress=progress, token_dtype=token_dtype,
                        token_device=token_device, info=info)
    out = labels[0].numpy()
    return out if K <= 255 else out.view(np.uint16)
