"""Segment an image file into a label file and an overlay picture, holding
neither the image nor the labels whole: what ``tools/infer_large.py`` runs
for a segmentor::

    from ufo_mm.apis.file_segmentation import segment_raster
    from ufo_mm.io.rasters import open_raster
    with open_raster('scene.tif') as src:
        row = segment_raster(model, src, 'out/scene_labels.tif', 'out/scene_overlay.jpg',
                             max_ram_gb=4)

- The image is read band by band as the model needs its rows
  (:func:`ufo_mm.streaming.inputs.raster_source`); a PNG or JPEG was
  decoded whole when opened (``RasterSource.decoded_whole``).
- The labels go band by band to a tiled, compressed (Geo)TIFF
  (:class:`ufo_mm.io.rasters.LabelWriter`, the input's georeference copied)
  when ``labels_path`` ends in ``.tif``; a ``.png`` is gathered whole and
  written at the end. Either is written under a temporary name and renamed
  when complete: after an error nothing is left under ``labels_path``.
- The overlay is made from a small label map kept at the picture's size
  while the bands pass (:class:`ufo_mm.visualization.overlays.LabelThumbnail`)
  and the image shrunk band by band as it is read again
  (:func:`ufo_mm.visualization.overlays.shrink_rows`).
- ``max_ram_gb``: the token tensors go to files in ``scratch_dir`` when they
  do not fit the budget (see :func:`ufo_mm.streaming.predict.predict`).
"""
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ufo_mm.io.images import write_labels
from ufo_mm.visualization.overlays import (LabelThumbnail, default_palette, overlay_size,
                                           shrink_rows, write_small_overlay)

#: ``labels_format`` names and their suffixes
LABEL_FORMATS = {'png': '.png', 'tif': '.tif'}


def default_labels_format(raster) -> str:
    """'tif' for an image read band by band (a TIFF), 'png' for one decoded
    whole (PNG, JPEG, ...): the label file of :func:`segment_raster`."""
    return 'png' if raster.decoded_whole else 'tif'


def segment_raster(model, raster, labels_path, overlay_path=None, *,
                   palette: Optional[Sequence[Sequence[int]]] = None, overlay_side: int = 2048,
                   opacity: float = 0.5, band_rows: Optional[int] = None,
                   tokens_per_band: Optional[int] = None, token_dtype=None,
                   token_device='auto', max_ram_gb: Optional[float] = None, scratch_dir=None,
                   cog: bool = False, progress: Optional[Callable[[int, int], None]] = None
                   ) -> dict:
    """Labels of every pixel of ``raster`` (an opened
    :class:`ufo_mm.io.rasters.RasterSource`) by an mmseg segmentor with a
    UFOViT backbone, written to ``labels_path`` (``.tif``: band by band;
    ``.png``: whole), and the overlay to ``overlay_path`` (None: none).

    ``palette``: the overlay's colours (default: the model's
    ``dataset_meta`` palette, else a fixed random one). ``scratch_dir``:
    where spilled token tensors go (default: beside ``labels_path``, in a
    temporary folder removed at the end). ``cog``: the TIFF rewritten as a
    Cloud Optimized GeoTIFF (needs rasterio). The other arguments are
    :func:`ufo_mm.streaming.predict.segment_large`'s.

    Returns a dict: seconds (the model), write_seconds (finishing the label
    file and the overlay), num_classes, labels_dtype, token_place, token_gb,
    ram_minimum_gb, band_rows (the output rows per band used; see
    :func:`ufo_mm.streaming.predict.predict`'s ``info``), labels, overlay
    (paths, as strings).
    """
    import torch

    from ufo_mm.io.rasters import LabelWriter
    from ufo_mm.streaming.predict import segment_large
    labels_path = Path(labels_path)
    suffix = labels_path.suffix.lower()
    if suffix not in ('.png', '.tif', '.tiff'):
        raise ValueError(f'labels are written as .png or .tif, not {labels_path.name}')
    H, W = raster.height, raster.width
    head = model.decode_head
    num_classes = int(head.num_classes)
    dtype = np.dtype(np.uint8 if head.out_channels <= 255 else np.uint16)
    size = overlay_size(H, W, overlay_side)
    thumbnail = LabelThumbnail(H, W, size, dtype) if overlay_path is not None else None
    if scratch_dir is None:
        scratch_dir = labels_path.parent
    if suffix == '.png':
        writer, whole = None, np.empty((H, W), dtype)
        whole.fill(0)  # resident now, so that a memory budget counts it as held
    else:
        writer, whole = LabelWriter(labels_path, H, W, dtype, profile=raster.profile,
                                    cog=cog), None

    def labels_sink(a, b, rows):
        if thumbnail is not None:
            thumbnail.add(a, rows)
        if writer is not None:
            writer.write_rows(a, rows)
        else:
            whole[a:b] = rows

    info = {}
    t = time.perf_counter()
    if writer is not None:
        writer.open()
    try:
        with torch.no_grad():
            segment_large(model, raster, band_rows=band_rows, progress=progress,
                          tokens_per_band=tokens_per_band, token_dtype=token_dtype,
                          token_device=token_device, info=info, labels_sink=labels_sink,
                          max_ram_gb=max_ram_gb, scratch_dir=scratch_dir)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    seconds = time.perf_counter() - t

    t = time.perf_counter()
    if writer is not None:
        writer.close()  # the last tiles, the rename (and the COG)
    else:
        write_labels(labels_path, whole)
        del whole
    if overlay_path is not None:
        if palette is None:
            palette = (getattr(model, 'dataset_meta', None) or {}).get('palette')
        if palette is None:
            palette = default_palette(num_classes)
        small = shrink_rows(lambda a, b: raster.read_rows(a, b, channel_order='rgb'), H, W, size)
        overlay_path = write_small_overlay(overlay_path, small, thumbnail.labels, palette,
                                           opacity)
    return dict(seconds=round(seconds, 3), write_seconds=round(time.perf_counter() - t, 3),
                num_classes=num_classes, labels_dtype=dtype.name,
                token_place=info.get('token_place'), token_gb=info.get('token_gb'),
                ram_minimum_gb=info.get('ram_minimum_gb'), band_rows=info.get('band_rows'),
                labels=str(labels_path),
                overlay=None if overlay_path is None else str(overlay_path))
