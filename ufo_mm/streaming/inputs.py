"""What every streamed prediction is given, for segmentation and detection
alike: the rows of its image (the sources: :func:`tensor_source`,
:func:`array_source`, :func:`raster_source`), the names of the token storage
dtypes (:func:`token_dtype`) and a progress counter (:class:`Progress`).
"""
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from . import bands

#: names of the token storage dtypes (``--token-dtype``, ``test_cfg.token_dtype``)
TOKEN_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def token_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """'fp32' / 'bf16' / 'fp16' (or None, or a torch dtype) -> the torch dtype."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in TOKEN_DTYPES:
        raise ValueError(f'token dtype must be one of {", ".join(TOKEN_DTYPES)}, got {name!r}')
    return TOKEN_DTYPES[name]


class Progress:
    """Counts units of work, reporting ``progress(done, total)``."""

    def __init__(self, total: int, progress: Optional[Callable[[int, int], None]]):
        self.done, self.total, self.progress = 0, total, progress

    def tick(self):
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


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
    return _preprocessed_rows(lambda a, b: image[a:b], image.shape[:2], data_preprocessor,
                              device)


def raster_source(raster, data_preprocessor, device=None
                  ) -> Tuple[bands.Node, Tuple[int, int]]:
    """As :func:`array_source`, for an image file read band by band
    (:class:`ufo_mm.io.rasters.RasterSource`, from ``open_raster``): each
    band's rows are read (BGR) when the patch embedding needs them, so the
    image is never held whole. The same pixels give the same rows as
    :func:`array_source`, hence the same labels."""
    return _preprocessed_rows(lambda a, b: raster.read_rows(a, b, channel_order='bgr'),
                              (raster.height, raster.width), data_preprocessor, device)


def _preprocessed_rows(read: Callable[[int, int], np.ndarray], size: Tuple[int, int],
                       data_preprocessor, device=None) -> Tuple[bands.Node, Tuple[int, int]]:
    """The node of normalised, padded rows of an (H, W) uint8 BGR image whose
    rows ``[a, b)`` ``read(a, b)`` gives as (b - a, W, 3); and the padded size."""
    H, W = size
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
        x = torch.from_numpy(read(min(a, H), min(b, H)))  # (r, W, C) uint8
        if device.type != 'cpu':
            x = x.to(device)
        if flip:
            x = x.flip(-1)
        x = x.permute(2, 0, 1).float()
        if mean is not None:
            x = (x - mean) / std
        if b > H or Wp > W:
            x = torch.nn.functional.pad(x, (0, Wp - W, 0, b - a - x.shape[1]), value=pad_val)
        return x[None]
    return bands.Source(rows, (Hp, Wp)), (Hp, Wp)
