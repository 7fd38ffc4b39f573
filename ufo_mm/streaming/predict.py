"""Streamed semantic segmentation with a UFO-ViT segmentor: labels of every
pixel, written band by band, equal to the segmentor's whole-image prediction.

What mmseg's ``EncoderDecoder.predict`` does in 'whole' mode, in bands:
backbone (:class:`.backbone.StreamedUFOViT`), neck and decode head
(:mod:`.heads`), the resize of the logits to the (padded) input size, the
crop of the padding, the resize to the original size, and the argmax (or the
threshold of a one-channel head). The (classes, H, W) logits exist one band at
a time; the label map is whole, or handed band by band to a sink
(``labels_sink``) that writes it to a file.

:func:`segment_large` is the entry for an image in memory (a uint8 array)
or in a file read band by band (:func:`ufo_mm.io.rasters.open_raster`): it
normalises the rows with the segmentor's data preprocessor as they are
needed, so no float copy of the image exists either.
"""
import contextlib
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from ..analysis import process_stats
from . import bands, heads
from .backbone import StreamedUFOViT
from .inputs import Progress, array_source, raster_source

#: bytes of one band of full-resolution logits (the band height follows from
#: it), on the CPU and on a GPU (larger bands: fewer, longer kernels)
LOGITS_BAND_BYTES = 64 << 20
LOGITS_BAND_BYTES_CUDA = 1 << 30
#: the fewest output rows a default band has, however wide the image: the
#: resize of the stride-4 logits computes 4 rows per input row, with one input
#: row of margin above and below a band, so thin bands compute mostly margin
#: (Semantic FPN's neck and head alone at 32768 px wide, one thread: 300 ms
#: a row in bands of 3 rows, 246 in 8, 205 in 16, 215 in 24)
MIN_BAND_ROWS = 16
#: within a memory budget, the share of it past which the free blocks the C heap
#: keeps for the next band (:func:`process_stats.freed_buffers_kept`) are handed
#: back after a band, leaving room for a band that cannot reuse them; where the
#: held memory and one band's estimate already pass it, none are kept at all
TRIM_AT = 0.8


def default_band_rows(device: torch.device, classes: int, width: int) -> int:
    """Output rows per band: ``LOGITS_BAND_BYTES`` (on a GPU
    ``LOGITS_BAND_BYTES_CUDA``) of float32 logits ``width`` pixels wide, and
    at least ``MIN_BAND_ROWS``."""
    budget = LOGITS_BAND_BYTES_CUDA if torch.device(device).type == 'cuda' else LOGITS_BAND_BYTES
    return max(MIN_BAND_ROWS, budget // (4 * classes * width))


def budget_band_rows(segmentor, band_rows: int, width: int, room: int) -> int:
    """The tallest band, at most ``band_rows`` output rows, whose working
    memory (:func:`head_band_bytes`) fits ``room`` bytes; 1 if none does (the
    memory budget then refuses the run, naming its minimum)."""
    while band_rows > 1 and head_band_bytes(segmentor, band_rows, width) > room:
        band_rows -= 1
    return band_rows


def head_band_bytes(segmentor, band_rows: int, width: int) -> int:
    """Working memory of one band of ``band_rows`` output rows ``width``
    pixels wide after the backbone, for a memory budget: the float32 logits
    of the band (resized and reduced to labels) and the neck's and head's
    maps at stride 4 that feed it (with their halo rows), an estimate with a
    margin: UperNet S12/16 at the default bands used 0.64 GiB at 2048 x 2048
    (estimated 0.79), 0.81 GiB at 4096 x 4096 (estimated 0.97) and 1.22 GiB
    at 8192 x 8192 (estimated 1.36; docs/large_images.md)."""
    head = segmentor.decode_head
    logits = 4 * band_rows * width * head.out_channels * 4
    channels = max(head.channels, getattr(getattr(segmentor, 'neck', None), 'out_channels', 0))
    maps = 24 * channels * (band_rows // 4 + 8) * (width // 4 + 1) * 4
    return logits + maps


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


def predict(segmentor, image: bands.Node, channels: int, meta: Optional[dict] = None,
            band_rows: Optional[int] = None, tokens_per_band: Optional[int] = None,
            labels_dtype: torch.dtype = torch.int64, with_logits: bool = False,
            progress: Optional[Callable[[int, int], None]] = None,
            token_dtype: Optional[torch.dtype] = None, token_device=None,
            labels_device: Optional[torch.device] = None, info: Optional[dict] = None,
            labels_sink: Optional[Callable[[int, int, torch.Tensor], None]] = None,
            max_ram_gb: Optional[float] = None, scratch_dir=None
            ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Labels (B, H, W) of ``image``, a band node of normalised (B, channels,
    H, W) inputs, and the full-size logits (B, classes, H, W) if
    ``with_logits`` (what mmseg keeps as ``seg_logits``: sigmoid for a
    one-channel head), else None.

    ``meta``: the image's meta information (mmseg's ``metainfo``: img_shape,
    pad_shape, padding_size, ori_shape); None for an unpadded image.
    ``band_rows``: output rows per band (default: 64 MB of logits, 1 GB on a
    GPU, at least ``MIN_BAND_ROWS``; within a memory budget, thinner where
    the budget needs it: :func:`budget_band_rows`).
    ``progress(done, total)``: called as the work advances.
    ``token_dtype``: storage of the backbone's token tensors (see
    :class:`.backbone.StreamedUFOViT`; bf16 halves the largest part of the
    memory, and the result is then close to, not equal to, whole-image's).
    ``token_device``: where those tensors live ('auto', the model's device,
    'cpu' or 'disk'; see :class:`.backbone.StreamedUFOViT`).
    ``max_ram_gb``: a memory budget, GiB of resident memory for the whole
    process: the token tensors go to files in ``scratch_dir`` when they do
    not fit it (the labels are the same); a budget too small for one band
    raises :class:`.tokens.MemoryBudgetError`. The whole label map (without
    ``labels_sink``) is part of what the budget must hold.
    ``labels_device``: where the labels are gathered (default: the model's
    device on the CPU; on a GPU the host, each band's labels copied back as
    they are made, in ``labels_dtype``).
    ``labels_sink(a, b, labels)``: given, each band's labels, rows ``[a,
    b)``, (B, b - a, W) in ``labels_dtype`` on the host, go to it as they are
    made, top to bottom, instead of into a whole label map (the labels
    returned are then None).
    ``info``: a dict that receives ``token_place`` ('compute', 'host' or
    'disk': where the token tensors lived), ``band_rows``, ``ram_minimum_gb``
    (the smallest memory budget this run accepts: what the process held
    before the tokens plus a band's estimated needs, GiB) and ``token_gb``
    (the token tensors, GiB).

    Every band is computed on the segmentor's device (its parameters').
    """
    size, (left, right, top, bottom), ori = output_geometry(meta or {}, image.size)
    head = segmentor.decode_head
    ac = head.align_corners
    K = head.out_channels
    device = next(segmentor.backbone.parameters()).device
    cuda = device.type == 'cuda'
    labels_bytes = 0
    if labels_sink is None and max_ram_gb is not None:  # the label map, gathered whole
        labels_bytes = ori[0] * ori[1] * torch.empty((), dtype=labels_dtype).element_size()
    if band_rows is None:
        band_rows = default_band_rows(device, K, ori[1])
        if max_ram_gb is not None:  # thinner bands where the budget needs them
            process_stats.release_free_heap()
            room = round(max_ram_gb * 2**30) - process_stats.rss_bytes() - labels_bytes
            band_rows = budget_band_rows(segmentor, band_rows, size[1], room)
    reserve = head_band_bytes(segmentor, band_rows, size[1]) + labels_bytes
    streamed = StreamedUFOViT(
        segmentor.backbone, tokens_per_band, token_dtype=token_dtype, token_device=token_device,
        max_ram=None if max_ram_gb is None else round(max_ram_gb * 2**30),
        scratch_dir=scratch_dir, head_band_bytes=reserve)
    if labels_device is None:
        labels_device = torch.device('cpu')
    n_bands = -(-ori[0] // band_rows)
    counter = Progress(streamed.work(image.size) + n_bands, progress)
    streamed.tick = counter.tick

    # within a budget the free blocks the heap keeps go back to the system once the
    # resident set nears it (most of a band's buffers are reused by the next band)
    trim_above = None if max_ram_gb is None else round(TRIM_AT * max_ram_gb * 2**30)
    # the bands allocate the same large buffers every time: kept for reuse, not faulted in
    # anew, unless a band fills the budget past TRIM_AT (the blocks one band frees, kept
    # until its end, then cost more than the budget has: Semantic FPN at 32768 px wide in
    # 4 GiB peaked at 4.11 GiB, 0.3 GiB above what it does without)
    keep = trim_above is None or process_stats.rss_bytes() + reserve <= trim_above
    with process_stats.freed_buffers_kept() if keep else contextlib.nullcontext():
        try:
            logits = heads.decode(segmentor, streamed(image, channels))
        except BaseException:
            streamed.close()
            raise
        if info is not None:
            m = streamed.memory
            info.update(token_place=streamed.store.place, band_rows=band_rows,
                        ram_minimum_gb=round((m['held_bytes'] + m['band_bytes']) / 2**30, 3),
                        token_gb=round(m['token_bytes'] / 2**30, 3))
        out = bands.Resize(logits, size=size, mode='bilinear', align_corners=ac)
        if left or right or top or bottom:
            out = bands.Crop(out, (out.height - top - bottom, out.width - left - right), top, left)
        out = bands.Resize(out, size=ori, mode='bilinear', align_corners=ac)

        labels = full_logits = None

        def sink(a, b, rows):
            nonlocal labels, full_logits
            if K > 1:
                band = rows.argmax(dim=1).to(labels_dtype)
            else:
                rows = rows.sigmoid()
                band = (rows[:, 0] > head.threshold).to(labels_dtype)
            if with_logits:
                if full_logits is None:
                    full_logits = rows.new_empty((rows.shape[0], K) + ori)
                full_logits[:, :, a:b] = rows
            if max_ram_gb is not None and process_stats.rss_bytes() > trim_above:
                process_stats.release_free_heap()  # the kept free blocks, back to the system
            if labels_sink is not None:
                labels_sink(a, b, band.cpu())
            else:
                if labels is None:
                    pin = cuda and labels_device.type == 'cpu'
                    labels = torch.empty((rows.shape[0],) + ori, dtype=labels_dtype,
                                         device=labels_device, pin_memory=pin)
                # from a GPU into pinned memory: asynchronous, the next band is queued meanwhile
                labels[:, a:b].copy_(band, non_blocking=cuda)
            counter.tick()
        try:
            with torch.no_grad():
                bands.evaluate(out, band_rows, sink)
            if cuda:
                torch.cuda.synchronize(device)
        finally:
            streamed.close()
        return labels, full_logits


def segment_large(model, image_bgr, band_rows: Optional[int] = None,
                  progress: Optional[Callable[[int, int], None]] = None,
                  tokens_per_band: Optional[int] = None,
                  token_dtype: Optional[torch.dtype] = None,
                  token_device=None, info: Optional[dict] = None,
                  labels_sink: Optional[Callable[[int, int, np.ndarray], None]] = None,
                  max_ram_gb: Optional[float] = None, scratch_dir=None
                  ) -> Optional[np.ndarray]:
    """Labels of every pixel of ``image_bgr`` at its own size, by an mmseg
    segmentor with a UFOViT backbone (e.g. from ``mmseg.apis.init_model``).

    ``image_bgr``: an (H, W, 3) uint8 array, BGR as mmseg's
    ``LoadImageFromFile`` gives; or an image file opened by
    :func:`ufo_mm.io.rasters.open_raster`, read band by band as the model
    needs the rows (a tiled or striped TIFF is then never held whole).

    Returns (H, W) uint8 when the model has at most 255 classes, else
    uint16. Equal to the segmentor's whole-image prediction of the image
    with no resize; memory is the image, the labels, the backbone's tokens
    and one band of the heads (see docs/large_images.md). ``token_dtype``
    (e.g. ``torch.bfloat16``) stores the tokens in half the memory, at the
    price of exactness.

    ``labels_sink(a, b, labels)``: given, each band of labels, rows ``[a,
    b)``, is handed to it as a (b - a, W) uint8 (or uint16) array, top to
    bottom, and no whole label map is made (None is returned): write them to
    a file (:class:`ufo_mm.io.rasters.LabelWriter`) as they come.

    It runs on the model's device: on a GPU every band is computed there,
    the uint8 image rows go up and the labels come back band by band, and
    the backbone's token tensors stay on the GPU where they fit
    (``token_device``: 'auto', 'cuda', 'cpu' or 'disk'; see
    :class:`.backbone.StreamedUFOViT`). ``max_ram_gb``, ``scratch_dir``
    (a memory budget: the token tensors in files when they do not fit it)
    and ``info``: see :func:`predict`.
    """
    model.eval()
    device = next(model.parameters()).device
    if hasattr(image_bgr, 'read_rows'):  # a RasterSource
        source, padded = raster_source(image_bgr, model.data_preprocessor, device)
        (H, W), channels = (image_bgr.height, image_bgr.width), 3
    else:
        source, padded = array_source(image_bgr, model.data_preprocessor, device)
        (H, W), channels = image_bgr.shape[:2], image_bgr.shape[2]
    meta = dict(img_shape=padded, pad_shape=padded, ori_shape=(H, W),
                padding_size=[0, padded[1] - W, 0, padded[0] - H])
    K = model.decode_head.out_channels
    dtype = torch.uint8 if K <= 255 else torch.int16  # int16 bits read as uint16

    def sink(a, b, rows):
        band = rows[0].numpy()
        labels_sink(a, b, band if K <= 255 else band.view(np.uint16))
    labels, _ = predict(model, source, channels, meta, band_rows, tokens_per_band,
                        labels_dtype=dtype, progress=progress, token_dtype=token_dtype,
                        token_device=token_device, info=info,
                        labels_sink=None if labels_sink is None else sink,
                        max_ram_gb=max_ram_gb, scratch_dir=scratch_dir)
    if labels is None:
        return None
    out = labels[0].numpy()
    return out if K <= 255 else out.view(np.uint16)
