"""Image files of any size: read one into a single (H, W, 3) uint8 array,
write a label map as a PNG, write a picture without leaving a half-written
file. ``tools/infer_large.py`` reads its images with this module::

    from ufo_mm.io.images import read_image, write_labels
    image = read_image('scene.png', channel_order='bgr')      # (H, W, 3) uint8
    write_labels('scene_labels.png', labels, num_classes=9)   # labels: (H, W) uint8

(:mod:`ufo_mm.io.rasters` reads a TIFF band by band instead, its pixels
converted as here.)

Memory is what limits the image size, so nothing here holds more than the
image itself plus a band of rows (about 32 MB) at a time: the pixels are
decoded once and converted band by band into the one (H, W, 3) uint8 array
(grey to three channels, alpha dropped, 16 bits to 8, RGB to BGR).

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
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

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


def file_head(path: Path, error=None) -> bytes:
    """The first 8 bytes of the image file ``path`` (its format's magic
    number): FileNotFoundError for a missing file, ``error`` (an exception
    class; ImageReadError by default) naming it for an empty one."""
    if not path.is_file():
        raise FileNotFoundError(f'no such image file: {path}')
    with open(path, 'rb') as f:
        head = f.read(8)
    if not head:
        raise (error or ImageReadError)(f'{path}: empty file')
    return head


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
    head = file_head(path, ImageReadError)
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


def fill_rows(out: np.ndarray, rows: Callable[[int, int], np.ndarray], bgr: bool,
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
    return fill_rows(out, rows, bgr, data.dtype.itemsize * max(samples, 3))


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
        return fill_rows(out, rows, channel_order == 'bgr', 4)


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
    return write_image(path, labels)


@contextlib.contextmanager
def replaced_when_written(path: PathLike) -> Iterator[Path]:
    """The temporary path (``.<stem>.part<suffix>`` beside ``path``, its folder
    made) to write ``path``'s content to: renamed to ``path`` when the block
    ends without an error, else removed. Nothing half-written is ever left
    under ``path``, nor the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f'.{path.stem}.part{path.suffix}')
    try:
        yield part
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()


def write_image(path: PathLike, array: np.ndarray) -> Path:
    """``cv2.imwrite`` (format by the suffix; BGR or grey) under a temporary
    name renamed to ``path`` once written: nothing half-written under ``path``."""
    import cv2
    with replaced_when_written(path) as part:
        if not cv2.imwrite(str(part), np.ascontiguousarray(array)):
            raise OSError(f'could not write {path}')
    return Path(path)
