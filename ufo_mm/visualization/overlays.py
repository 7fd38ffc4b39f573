"""Pictures of a prediction over its image, for images of any size: a label
map's colours (:func:`colour_labels`) blended over the image, or detections'
masks and boxes drawn on it, shrunk so that the long side is at most
``max_side``::

    from ufo_mm.visualization.overlays import write_overlay
    write_overlay('scene_overlay.jpg', image_rgb, labels, palette, max_side=2048)

Neither the image nor the labels are copied whole: the image is shrunk band
by band (:func:`shrink_rows`, about ``SHRINK_BAND_BYTES`` of rows at a time)
before any colour is blended, and a label map that arrives band by band is
kept at the picture's size only (:class:`LabelThumbnail`).
"""
from pathlib import Path
from typing import Callable, Sequence, Tuple

import numpy as np

from ufo_mm.io.images import PathLike, write_image

# Bytes of the image's rows shrunk at a time.
SHRINK_BAND_BYTES = 32 << 20
IGNORE_COLOUR = (0, 0, 0)


def colour_labels(label: np.ndarray, palette: Sequence[Sequence[int]],
                  ignore_index: int = 255) -> np.ndarray:
    """(H, W) int label map -> (H, W, 3) uint8 RGB; ``ignore_index`` and labels
    outside the palette are black."""
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    out = np.zeros(label.shape + (3,), np.uint8)
    out[:] = IGNORE_COLOUR
    valid = (label != ignore_index) & (label >= 0) & (label < len(palette))
    out[valid] = palette[label[valid]]
    return out


def overlay_size(height: int, width: int, max_side: int) -> Tuple[int, int]:
    """(h, w) of a picture of (height, width) shrunk so that its long side is
    at most ``max_side``, aspect kept (never enlarged)."""
    if max_side < 1:
        raise ValueError(f'max_side must be >= 1, got {max_side}')
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink_image(image: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 (any strides) -> (h, w, 3) uint8 by area averaging
    (OpenCV ``INTER_AREA``), band by band: only a band of rows of the full
    image is ever copied."""
    height, width = image.shape[:2]
    if tuple(size_hw) == (height, width):
        return np.ascontiguousarray(image)
    return shrink_rows(lambda a, b: image[a:b], height, width, size_hw)


def shrink_rows(rows: Callable[[int, int], np.ndarray], height: int, width: int,
                size_hw: Tuple[int, int]) -> np.ndarray:
    """:func:`shrink_image` of an image given by its rows: ``rows(a, b)``
    gives rows ``[a, b)`` of a (height, width, 3) uint8 image (e.g. read from
    a file band by band, ``RasterSource.read_rows``). Asks for about
    ``SHRINK_BAND_BYTES`` of rows at a time, top to bottom."""
    import cv2
    h, w = size_hw
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, int(SHRINK_BAND_BYTES / (3 * width * height / h)))  # output rows per band
    for o0 in range(0, h, step):
        o1 = min(h, o0 + step)
        i0, i1 = o0 * height // h, -(-o1 * height // h)
        band = np.ascontiguousarray(rows(i0, i1))
        if (h, w) == (height, width):
            out[o0:o1] = band
        else:
            out[o0:o1] = cv2.resize(band, (w, o1 - o0), interpolation=cv2.INTER_AREA)
    return out


def _centres(n: int, size: int) -> np.ndarray:
    """Source index of the centre of each of ``size`` output pixels over ``n``."""
    return ((np.arange(size) + 0.5) * n / size).astype(np.int64)


def shrink_labels(labels: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """(H, W) -> (h, w) by nearest neighbour: the label at each output pixel's
    centre."""
    height, width = labels.shape
    h, w = size_hw
    return labels[_centres(height, h)[:, None], _centres(width, w)[None, :]]


class LabelThumbnail:
    """:func:`shrink_labels` of a label map that arrives band by band: the
    small (h, w) map is all that is kept. ``add(a, rows)`` with rows ``[a, a +
    len(rows))`` of the (height, width) map, in any order; ``labels`` the
    small map once every band was given."""

    def __init__(self, height: int, width: int, size_hw: Tuple[int, int], dtype=np.uint8):
        self.rows = _centres(height, size_hw[0])
        self.cols = _centres(width, size_hw[1])
        self.labels = np.zeros(size_hw, dtype)

    def add(self, a: int, rows: np.ndarray):
        picked = np.nonzero((self.rows >= a) & (self.rows < a + len(rows)))[0]
        if len(picked):
            self.labels[picked] = rows[self.rows[picked] - a][:, self.cols]


def default_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours for a model without a palette (fixed seed)."""
    return np.random.default_rng(42).integers(0, 256, (num_classes, 3), dtype=np.uint8)


def write_overlay(path: PathLike, image: np.ndarray, labels: np.ndarray,
                  palette: Sequence[Sequence[int]], max_side: int = 2048,
                  opacity: float = 0.5, ignore_index: int = 255) -> Path:
    """Write a picture of ``image`` (H, W, 3) uint8 RGB with ``labels`` (H, W)
    blended over it in the ``palette``'s colours (``opacity`` of label colour;
    ``ignore_index`` and labels outside the palette black), shrunk first so
    that its long side is at most ``max_side``. JPEG or PNG by the suffix.
    Returns the path."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be (H, W, 3) uint8, got {image.dtype} {image.shape}')
    if image.shape[:2] != labels.shape:
        raise ValueError(f'image {image.shape[:2]} and labels {labels.shape} differ in size')
    size = overlay_size(*labels.shape, max_side)
    return write_small_overlay(path, shrink_image(image, size), shrink_labels(labels, size),
                               palette, opacity, ignore_index)


def write_small_overlay(path: PathLike, small_image: np.ndarray, small_labels: np.ndarray,
                        palette: Sequence[Sequence[int]], opacity: float = 0.5,
                        ignore_index: int = 255) -> Path:
    """:func:`write_overlay` of an image and labels already shrunk to the
    picture's size ((h, w, 3) uint8 RGB, e.g. by :func:`shrink_rows`, and
    (h, w), e.g. by :class:`LabelThumbnail`): an image file's overlay with
    neither held whole."""
    import cv2
    if not 0 <= opacity <= 1:
        raise ValueError(f'opacity must be in [0, 1], got {opacity}')
    colours = colour_labels(small_labels, palette, ignore_index)
    picture = cv2.addWeighted(small_image, 1 - opacity, colours, opacity, 0)
    return write_image(path, picture[..., ::-1])


def write_detection_overlay(path: PathLike, image: np.ndarray, instances,
                            palette: Sequence[Sequence[int]], max_side: int = 2048,
                            opacity: float = 0.5) -> Path:
    """Write a picture of ``image`` (H, W, 3) uint8 RGB shrunk so that its
    long side is at most ``max_side``, each detection's mask (COCO RLE)
    blended in its class colour and its box drawn. Returns the path."""
    import cv2
    from pycocotools import mask as mask_util
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be (H, W, 3) uint8, got {image.dtype} {image.shape}')
    height, width = image.shape[:2]
    size = overlay_size(height, width, max_side)
    picture = shrink_image(image, size).astype(np.float32)
    sy, sx = size[0] / height, size[1] / width
    rows = ((np.arange(size[0]) + 0.5) / sy).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) / sx).astype(np.int64)
    palette = np.asarray(palette, dtype=np.float32)
    labels = instances.labels.tolist()
    masks = instances.masks if 'masks' in instances else [None] * len(labels)
    for rle, label in zip(masks, labels):
        if rle is not None:
            m = mask_util.decode(rle)[rows[:, None], cols[None, :]].astype(bool)
            picture[m] = (1 - opacity) * picture[m] + opacity * palette[label % len(palette)]
    picture = picture.astype(np.uint8)
    for (x1, y1, x2, y2), label in zip(instances.bboxes.tolist(), labels):
        colour = tuple(int(c) for c in palette[label % len(palette)])
        cv2.rectangle(picture, (int(x1 * sx), int(y1 * sy)), (int(x2 * sx), int(y2 * sy)),
                      colour, 1)
    return write_image(path, picture[..., ::-1])
