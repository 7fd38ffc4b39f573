"""Image files of any size for whole-image segmentation and detection: read
one into a single uint8 array, write a label map (or the detections as JSON)
and a small overlay picture.

``tools/infer_large.py`` is the command line over this module::

    from ufo_mm.apis.large_image import read_image, write_labels, write_overlay
    image = read_image('scene.tif', channel_order='bgr')      # (H, W, 3) uint8
    write_labels('scene_labels.png', labels, num_classes=9)   # labels: (H, W) uint8
    write_overlay('scene_overlay.jpg', image[..., ::-1], labels, palette, max_side=2048)

Memory is what limits the image size, so nothing here holds more than the
image itself plus a band of rows (about 32 MB) at a time: the pixels are
decoded once and converted band by band into the one (H, W, 3) uint8 array
(grey to three channels, alpha dropped, 16 bits to 8, RGB to BGR), and the
overlay is shrunk band by band before any colour is blended.

Formats, told by the file's first bytes, not its name:

- TIFF and BigTIFF: ``tifffile`` (with ``imagecodecs`` for LZW, JPEG, ...),
  the first page (of a pyramid, the full-resolution level), chunky or planar;
  decoded straight into the array, which is returned as it is when it already
  is (H, W, 3) uint8 (RGB to BGR then swaps channels in place).
- PNG, JPEG and whatever else PIL opens: PIL, with its decompression-bomb
  limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 Mpx; an error above twice
  that) lifted for this read only and restored after it, and truncated files
  refused. PIL holds the decoded image at 4 bytes a pixel while it is copied
  out, so the read peaks at about 7 bytes a pixel (3 GB at 20k x 20k), before
  any model memory. The EXIF orientation is applied, as mmseg's
  ``LoadImageFromFile`` (OpenCV) does; JPEG pixels equal OpenCV's.
  OpenCV itself is not used for reading: it refuses images over 2^30 pixels
  (``OPENCV_IO_MAX_IMAGE_PIXELS``), PNGs wider than 10^6 pixels (libpng's
  limit) and returns a cut-short JPEG as if it were whole.

Pixel kinds: grey (and grey + alpha) becomes three equal channels; RGBA loses
its alpha (not blended: the colour as stored); palette images take their
palette's colours; 16-bit samples keep their high byte (``v >> 8``, as OpenCV
and PIL convert 16-bit PNGs), so an image whose values use only the low 12
bits comes out dark: stretch it to 16 bits or convert it to 8 bits first.
Anything else (floating point, more than four channels, CMYK TIFF) raises
:class:`ImageReadError` naming the file, as does a corrupt or truncated file.
"""
import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

# Refuse (before decoding) images above this many pixels: with PIL's own limit
# lifted, this is the guard against a decompression bomb. 2^32 px is 12.9 GB as
# uint8 RGB, four times the 32768 x 32768 images this is meant for.
MAX_PIXELS = 1 << 32
# Bytes of source pixels converted at a time.
BAND_BYTES = 32 << 20

TIFF_MAGIC = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')  # classic, BigTIFF
# PIL modes np.asarray turns into (h, w), (h, w, 2|3|4) uint8 / uint16 / bool arrays
PIL_ARRAY_MODES = ('1', 'L', 'LA', 'RGB', 'RGBA', 'I;16', 'I;16L', 'I;16B', 'I;16N')


class ImageReadError(ValueError):
    """An image file that cannot be read: corrupt, cut short, or with pixels
    that are not grey, RGB(A) or palette of 8 or 16 bits. The message names
    the file."""


@contextlib.contextmanager
def lifted_pil_limit():
    """PIL with no decompression-bomb limit and truncated images refused,
    inside the ``with`` only; both module globals are restored on exit, also
    after an error. (Globals: not for threads reading other images at once.)"""
    from PIL import Image, ImageFile
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def read_image(path: PathLike, channel_order: str = 'rgb',
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image at ``path`` as one (H, W, 3) uint8 C-contiguous array, its
    channels in ``channel_order`` ('rgb', or 'bgr' as mmseg's
    ``LoadImageFromFile`` gives them).

    Raises FileNotFoundError for a missing file and :class:`ImageReadError`
    (naming the file) for one that cannot be read or has more than
    ``max_pixels`` pixels.
    """
    if channel_order not in ('rgb', 'bgr'):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no such image file: {path}')
    with open(path, 'rb') as f:
        head = f.read(8)
    if not head:
        raise ImageReadError(f'{path}: empty file')
    reader = _read_tiff if head[:4] in TIFF_MAGIC else _read_pil
    try:
        return reader(path, channel_order, max_pixels)
    except (ImageReadError, MemoryError):
        raise
    except Exception as e:  # each decoder has its own errors (OSError, SyntaxError, zlib ...)
        raise ImageReadError(f'cannot read image {path}: {type(e).__name__}: {e}') from e


def _check_size(path, height: int, width: int, max_pixels: int):
    if height < 1 or width < 1:
        raise ImageReadError(f'{path}: image of {width} x {height} pixels')
    if height * width > max_pixels:
        raise ImageReadError(f'{path}: {width} x {height} = {height * width} pixels, more than '
                             f'max_pixels={max_pixels} ({3 * height * width / 2**30:.1f} GiB '
                             'as uint8 RGB); pass a larger max_pixels to read it')


def _band_rows(width: int, bytes_per_pixel: int) -> int:
    return max(1, BAND_BYTES // max(1, width * bytes_per_pixel))


def _fill(out: np.ndarray, rows: Callable[[int, int], np.ndarray], bgr: bool,
          bytes_per_pixel: int) -> np.ndarray:
    """Write source rows ``rows(r0, r1)`` (h, w[, c]) into ``out`` (H, W, 3)
    uint8 band by band, converted to RGB (or BGR); ``out`` may be the source
    itself (numpy buffers overlapping assignments)."""
    height, width = out.shape[:2]
    step = _band_rows(width, bytes_per_pixel)
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        src = rows(r0, r1)
        if src.dtype == np.bool_:
            src = src.view(np.uint8) * np.uint8(255)
        elif src.dtype.kind == 'u' and src.dtype.itemsize == 2:
            src = (src >> 8).astype(np.uint8)
        elif src.dtype != np.uint8:
            raise TypeError(f'unexpected sample type {src.dtype}')
        if src.ndim == 2:
            out[r0:r1] = src[..., None]
        elif src.shape[2] <= 2:  # grey, grey + alpha
            out[r0:r1] = src[..., :1]
        else:  # RGB, RGBA
            out[r0:r1] = src[..., 2::-1] if bgr else src[..., :3]
    return out


def _read_tiff(path: Path, channel_order: str, max_pixels: int) -> np.ndarray:
    import tifffile
    from tifffile import PHOTOMETRIC
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]  # a pyramid's first page is its full-resolution level
        shape = dict(zip(page.axes, page.shape))
        height, width, samples = shape.get('Y', 0), shape.get('X', 0), shape.get('S', 1)
        _check_size(path, height, width, max_pixels)
        photometric, dtype = page.photometric, np.dtype(page.dtype)
        jpeg_ycbcr = photometric == PHOTOMETRIC.YCBCR and page.compression in (6, 7)
        kinds = {PHOTOMETRIC.MINISBLACK: (1, 2), PHOTOMETRIC.MINISWHITE: (1, 2),
                 PHOTOMETRIC.RGB: (3, 4), PHOTOMETRIC.PALETTE: (1,)}
        if jpeg_ycbcr:  # decoded to RGB by the JPEG codec
            photometric = PHOTOMETRIC.RGB
        if photometric not in kinds or samples not in kinds[photometric] or \
                set(page.axes) - set('YXS') or \
                not (dtype in (np.uint8, np.uint16) or dtype == np.bool_):
            raise ImageReadError(
                f'{path}: a {PHOTOMETRIC(photometric).name} TIFF of {samples} {dtype} '
                f'sample(s) per pixel (axes {page.axes}, shape {page.shape}); readable are grey '
                '(+ alpha), RGB(A) and palette images of 1, 8 or 16 bits')
        data = page.asarray()
        if page.axes == 'SYX':  # planar: a (Y, X, S) view, converted band by band
            data = np.moveaxis(data, 0, -1)
        if photometric == PHOTOMETRIC.PALETTE:  # colormap: (3, 2^bits) uint16
            lut = np.ascontiguousarray((np.asarray(page.colormap).T >> 8).astype(np.uint8))
            rows = lambda r0, r1: lut[data[r0:r1]]  # noqa: E731
        elif photometric == PHOTOMETRIC.MINISWHITE:  # ~v: max - v (unsigned), not v (bool)
            rows = lambda r0, r1: ~data[r0:r1]  # noqa: E731
        else:
            rows = lambda r0, r1: data[r0:r1]  # noqa: E731
    bgr = channel_order == 'bgr'
    in_place = (photometric == PHOTOMETRIC.RGB and samples == 3 and data.dtype == np.uint8
                and data.flags.c_contiguous and data.flags.writeable)
    if in_place and not bgr:
        return data
    out = data if in_place else np.empty((height, width, 3), np.uint8)
    return _fill(out, rows, bgr, data.dtype.itemsize * max(samples, 3))


def _read_pil(path: Path, channel_order: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps
    with lifted_pil_limit(), Image.open(path) as im:
        _check_size(path, im.height, im.width, max_pixels)
        im.load()  # decodes all, or raises for a truncated or corrupt file
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation, as OpenCV applies it
            im = ImageOps.exif_transpose(im)
        width, height, mode = im.width, im.height, im.mode

        def rows(r0, r1):
            band = im.crop((0, r0, width, r1))
            if mode in PIL_ARRAY_MODES:
                return np.asarray(band)
            if mode == 'I':  # 32-bit integer grey: PIL's form of some 16-bit PNGs
                return np.clip(np.asarray(band), 0, 65535).astype(np.uint16)
            if mode == 'F':
                raise ImageReadError(f'{path}: floating-point pixels (PIL mode F)')
            return np.asarray(band.convert('RGB'))  # palette, CMYK, YCbCr, ...

        out = np.empty((height, width, 3), np.uint8)
        return _fill(out, rows, channel_order == 'bgr', 4)


# ---------------------------------------------------------------- writing

def write_labels(path: PathLike, labels: np.ndarray, num_classes: Optional[int] = None) -> Path:
    """Write (H, W) class indices as a grayscale PNG of the same size: 8-bit
    when ``num_classes`` <= 255, 16-bit when more (``None``: the labels' own
    dtype, uint8 or uint16). uint8 / uint16 input is written without a copy;
    other integer types are converted after a range check. Returns the path."""
    path = Path(path)
    if path.suffix.lower() != '.png':
        raise ValueError(f'label maps are written as PNG, not {path.name}')
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in 'ui':
        raise ValueError(f'labels must be an (H, W) integer array, got {labels.dtype} '
                         f'{labels.shape}')
    if num_classes is None:
        if labels.dtype not in (np.uint8, np.uint16):
            raise ValueError(f'{labels.dtype} labels: pass num_classes to choose 8 or 16 bits')
        dtype = labels.dtype
    else:
        if not 1 <= num_classes <= 65535:
            raise ValueError(f'num_classes={num_classes}: a PNG holds at most 16 bits')
        dtype = np.dtype(np.uint8 if num_classes <= 255 else np.uint16)
    if labels.dtype != dtype:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > np.iinfo(dtype).max:
            raise ValueError(f'labels from {lo} to {hi} do not fit {dtype.name}')
        labels = labels.astype(dtype)
    return _imwrite(path, labels)


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
    ``BAND_BYTES`` of rows at a time, top to bottom."""
    import cv2
    h, w = size_hw
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, int(BAND_BYTES / (3 * width * height / h)))  # output rows per band
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

    from ufo_mm.visualization.seg_pictures import colour_labels
    if not 0 <= opacity <= 1:
        raise ValueError(f'opacity must be in [0, 1], got {opacity}')
    colours = colour_labels(small_labels, palette, ignore_index)
    picture = cv2.addWeighted(small_image, 1 - opacity, colours, opacity, 0)
    return _imwrite(path, picture[..., ::-1])


def _imwrite(path: PathLike, array: np.ndarray) -> Path:
    """``cv2.imwrite`` (format by the suffix; BGR or grey) under a temporary
    name renamed to ``path`` once written: nothing half-written under ``path``."""
    import cv2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f'.{path.stem}.part{path.suffix}')
    try:
        if not cv2.imwrite(str(part), np.ascontiguousarray(array)):
            raise OSError(f'could not write {path}')
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()
    return path


def write_instances(path: PathLike, instances, height: int, width: int,
                    classes: Optional[Sequence[str]] = None) -> Path:
    """Write detections (mmdet's ``InstanceData`` with masks as COCO RLE, as
    :func:`ufo_mm.streaming.detector.detect_large` gives) as JSON:
    ``{"height", "width", "classes", "instances": [{"bbox": [x, y, w, h],
    "score", "category_id", "category", "segmentation": RLE}]}``, each as in a
    COCO results file (``segmentation`` only when there are masks). Returns
    the path."""
    bboxes = instances.bboxes.tolist()
    scores = instances.scores.tolist()
    labels = instances.labels.tolist()
    masks = instances.masks if 'masks' in instances else None
    rows = []
    for i, ((x1, y1, x2, y2), score, label) in enumerate(zip(bboxes, scores, labels)):
        row = dict(bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                   score=round(score, 5), category_id=int(label))
        if classes is not None and 0 <= label < len(classes):
            row['category'] = classes[label]
        if masks is not None:
            rle = dict(masks[i])
            if isinstance(rle['counts'], bytes):
                rle['counts'] = rle['counts'].decode()
            row['segmentation'] = dict(size=[int(n) for n in rle['size']], counts=rle['counts'])
        rows.append(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(height=int(height), width=int(width),
                                    classes=list(classes) if classes is not None else None,
                                    instances=rows)))
    return path


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
    return _imwrite(path, picture[..., ::-1])


class ProgressBarCallback:
    """A ``progress(done, total)`` callable drawing mmengine's ``ProgressBar``
    on ``file`` (stderr by default, so that stdout stays for results). The bar
    starts at the first call, when ``total`` is known; a line break ends it
    once ``done`` reaches ``total``."""

    def __init__(self, file=None):
        import sys
        self.file = file if file is not None else sys.stderr
        self.bar = None

    def __call__(self, done: int, total: int):
        from mmengine.utils import ProgressBar
        if self.bar is None:
            self.bar = ProgressBar(total, file=self.file)
        if done > self.bar.completed:
            self.bar.update(done - self.bar.completed)
            if done >= total:
                self.file.write('\n')
                self.file.flush()
