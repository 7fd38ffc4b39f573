"""What every streamed prediction is given, for segmentation and detection
alike: its options (:class:`StreamConfig`, read from a model's ``test_cfg``
by :func:`stream_config` or made from arguments), the rows of its image (the
sources: :func:`tensor_source`, :func:`array_source`, :func:`raster_source`)
and a progress counter (:class:`Progress`).

The rules for a ``test_cfg`` are the same for every streaming model; what
differs is data, a :class:`ModelModes` per model (:data:`SEGMENTOR`,
:data:`DETECTOR`): its own test modes, the options mode 'stream' reads, and
the keys its heads read in every mode.
"""
import dataclasses
from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np
import torch

from . import bands

#: names of the token storage dtypes (``--token-dtype``, ``test_cfg.token_dtype``)
TOKEN_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
#: instance mask encodings of the streaming detector (``test_cfg.mask_format``)
MASK_FORMATS = ('bitmap', 'rle')


def token_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """'fp32' / 'bf16' / 'fp16' (or None, or a torch dtype) -> the torch dtype."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in TOKEN_DTYPES:
        raise ValueError(f'token dtype must be one of {", ".join(TOKEN_DTYPES)}, got {name!r}')
    return TOKEN_DTYPES[name]


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Options of one streamed prediction (test mode 'stream').

    Args:
        band_rows: rows per band: of the output (segmentation; default 64 MB
            of logits, 1 GB on a GPU) or of the finest FPN level (detection;
            default 64 MB of it).
        tokens_per_band: tokens per band of the backbone's blocks (default:
            :func:`.backbone.default_tokens_per_band` of the model's device).
        token_dtype: storage of the backbone's token tensors: a torch dtype
            or a name of :data:`TOKEN_DTYPES` (None: float32).
        token_device: where those tensors live ('auto', the model's device,
            'cpu' or 'disk'; see :class:`.backbone.StreamedUFOViT`).
        max_ram_gb: memory budget of the process, GiB; the token tensors go
            to files in ``scratch_dir`` when they do not fit it.
        scratch_dir: folder of those files (default: the system's temporary
            folder).
        return_logits: segmentation: also keep the full-size (classes, H, W)
            logits (mmseg's ``seg_logits``).
        mask_format: detection: 'bitmap' (mmdet's (instances, H, W)
            booleans) or 'rle' (COCO RLE, one instance at a time).
    """
    band_rows: Optional[int] = None
    tokens_per_band: Optional[int] = None
    token_dtype: Optional[torch.dtype] = None
    token_device: Optional[str] = None
    max_ram_gb: Optional[float] = None
    scratch_dir: Optional[str] = None
    return_logits: bool = False
    mask_format: str = 'bitmap'

    def __post_init__(self):
        object.__setattr__(self, 'token_dtype', token_dtype(self.token_dtype))
        if self.mask_format not in MASK_FORMATS:
            raise ValueError(f"test_cfg.mask_format must be {' or '.join(map(repr, MASK_FORMATS))}"
                             f', got {self.mask_format!r}')


class ModelModes(NamedTuple):
    """What a streaming model's ``test_cfg`` may hold."""
    #: the model's own test modes (besides 'stream'); the first is the default
    own: Tuple[str, ...]
    #: the :class:`StreamConfig` fields mode 'stream' reads
    options: Tuple[str, ...]
    #: keys the model's heads read in every mode (mmdet's ``rpn``, ``rcnn``)
    head_keys: Tuple[str, ...] = ()


#: ``StreamingEncoderDecoder`` (mmseg's modes 'whole' and 'slide')
SEGMENTOR = ModelModes(('whole', 'slide'),
                      ('band_rows', 'tokens_per_band', 'return_logits', 'token_dtype',
                       'token_device', 'max_ram_gb', 'scratch_dir'))
#: ``StreamingMaskRCNN`` (mmdet's mode 'whole')
DETECTOR = ModelModes(('whole',),
                     ('band_rows', 'tokens_per_band', 'token_dtype', 'token_device',
                      'mask_format'),
                     ('rpn', 'rcnn'))


def stream_config(test_cfg, modes: ModelModes) -> Optional[StreamConfig]:
    """The :class:`StreamConfig` of a model's ``test_cfg`` in mode 'stream',
    or None in one of the model's own modes (``modes.own``; the first one
    when ``test_cfg`` names none). Raises ValueError for a mode the model
    has not or a bad value, KeyError naming the keys that mode 'stream'
    does not read (and the ones it does)."""
    cfg = dict(test_cfg or {})
    mode = cfg.pop('mode', modes.own[0])
    if mode != 'stream':
        if mode not in modes.own:
            names = [repr(m) for m in modes.own + ('stream',)]
            raise ValueError(f'test_cfg.mode must be {", ".join(names[:-1])} or {names[-1]}, '
                             f'got {mode!r}')
        return None
    valid = ('mode',) + modes.head_keys + modes.options
    unknown = set(cfg) - set(valid)
    if unknown:
        raise KeyError(f'test_cfg keys {sorted(unknown)} have no meaning in mode stream; '
                       f'valid: {", ".join(valid)}')
    return StreamConfig(**{k: cfg[k] for k in modes.options if cfg.get(k) is not None})


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
