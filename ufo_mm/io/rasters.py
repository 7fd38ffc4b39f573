"""Rasters of any size, a band of rows at a time: read an image band by band
(:func:`open_raster`) and write a label map band by band
(:class:`LabelWriter`), neither ever holding the whole image::

    from ufo_mm.io.rasters import LabelWriter, open_raster
    with open_raster('scene.tif') as src, \\
            LabelWriter('labels.tif', src.height, src.width, profile=src.profile) as out:
        for a in range(0, src.height, 512):
            b = min(src.height, a + 512)
            image = src.read_rows(a, b)          # (b - a, W, 3) uint8, BGR
            out.write_rows(a, predict(image))    # (b - a, W) uint8 labels

Reading (``tifffile``, with ``imagecodecs`` for the codecs):

- TIFF and BigTIFF, tiled or striped, chunky or planar, compressed or not: only
  the tiles or strips that hold the rows asked for are read and decoded (the
  last row of tiles is kept for the next band). Uncompressed contiguous pixels
  (one strip, as ``tifffile.imwrite`` writes them) are memory-mapped. A
  compressed strip is decoded whole, so a file of one compressed strip is.
- Pyramids (whole-slide SVS, OME / SubIFD pyramids, reduced-resolution pages
  as tifffile lists them in ``TiffFile.series[0].levels``): level 0, the full
  resolution, unless ``level=N`` picks another.
- PNG, JPEG and whatever else PIL opens: decoded whole by
  :func:`ufo_mm.io.images.read_image` (``RasterSource.decoded_whole``),
  then served band by band from memory.

Pixels are converted as ``read_image`` converts them: grey to three channels,
alpha dropped, palette to its colours, 16 bits to their high byte, RGB to BGR
when asked. Anything else (floating point, more than four channels, CMYK, a
codec ``imagecodecs`` lacks) raises :class:`RasterError` (an
:class:`~ufo_mm.io.images.ImageReadError`) naming the file, when the
file is opened; a truncated file too.

Georeference: the GeoTIFF tags of the input (``RasterSource.profile``) are
copied as they are into the labels, so the label map lies where the scene lies
in any GIS, whatever its CRS; ``profile['crs']`` ('EPSG:n', when the keys name
one) and ``profile['transform']`` (GDAL's affine ``(a, b, c, d, e, f)``) are
read from them without GDAL.

Writing: a tiled, compressed TIFF (BigTIFF above 4 GB) written by ``tifffile``
one row of tiles at a time, to ``<name>.part`` renamed to ``<name>`` when the
last row is written; after an error nothing is left under either name.
``rasterio`` (GDAL) is needed only for ``cog=True`` and for a ``profile`` that
gives a CRS and transform without GeoTIFF tags (``pip install rasterio``, or
the extra ``ufo-mm[geo]``).

Nothing here imports torch.
"""
import errno
import math
import os
import queue
import threading
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .images import TIFF_MAGIC, ImageReadError, file_head, fill_rows, read_image

PathLike = Union[str, os.PathLike]

# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory,
# GeoDoubleParams, GeoAsciiParams
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)
# Labels with more uncompressed bytes than this are written as BigTIFF: a
# classic TIFF's offsets are 32 bits (the margin covers the tags and deflate's
# worst case, +0.03 %, up to 100 GB).
BIGTIFF_BYTES = 2**32 - 2**25
# GDAL's names of the compressions tifffile writes (for cog=True)
GDAL_COMPRESSION = {None: 'NONE', 'none': 'NONE', 'zlib': 'DEFLATE', 'deflate': 'DEFLATE',
                    'adobe_deflate': 'DEFLATE', 'lzw': 'LZW', 'zstd': 'ZSTD',
                    'lzma': 'LZMA', 'packbits': 'PACKBITS'}


class RasterError(ImageReadError):
    """A raster file that cannot be read band by band: corrupt, cut short,
    compressed with a codec imagecodecs lacks, or with pixels that are not
    grey, RGB(A) or palette of 1, 8 or 16 bits. The message names the file."""


class RasterWriteError(OSError):
    """A label file that could not be written (disk full: ``errno`` ENOSPC).
    The message names the file; the partial file has been removed."""


def require_rasterio(why: str):
    """``rasterio``, or an ImportError that says how to install it."""
    try:
        import rasterio
        import rasterio.shutil  # noqa: F401
    except ImportError as e:
        raise ImportError(f'{why} needs rasterio (GDAL): pip install rasterio '
                          '(or pip install "ufo-mm[geo]")') from e
    return rasterio


# ---------------------------------------------------------------- reading

class RasterSource:
    """An image file read a band of rows at a time; a context manager.

    Attributes:
        path (Path): the file.
        height, width (int): of the level read.
        channels (int): samples stored per pixel (1 grey or palette, 2 grey +
            alpha, 3 RGB, 4 RGBA; 3 for an image decoded whole).
        dtype (np.dtype): the stored sample type (uint8, uint16 or bool).
        level (int), levels (tuple of (height, width)): the pyramid level
            read and the sizes of all levels (one for a plain image).
        profile (dict or None): the georeference, None without one:
            ``crs`` ('EPSG:n', or None when the keys name none),
            ``transform`` ((a, b, c, d, e, f): x = a col + b row + c,
            y = d col + e row + f, of pixel corners, as GDAL's), and
            ``geotiff_tags`` (((code, dtype, count, value), ...), for
            :class:`LabelWriter`), all for the level read.
        decoded_whole (bool): the whole image was decoded when opened.
    """
    decoded_whole = False

    def __init__(self, path: Path):
        self.path = path
        self.height = self.width = self.channels = 0
        self.dtype = np.dtype(np.uint8)
        self.level, self.levels, self.profile = 0, (), None

    def read_rows(self, a: int, b: int, channel_order: str = 'bgr') -> np.ndarray:
        """Rows ``a`` to ``b`` (``b`` excluded) as a new (b - a, W, 3) uint8
        C-contiguous array, channels in ``channel_order`` ('bgr', as mmseg's
        ``LoadImageFromFile`` gives them, or 'rgb'). Reads only the tiles or
        strips that hold these rows."""
        if channel_order not in ('rgb', 'bgr'):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if not 0 <= a <= b <= self.height:
            raise ValueError(f'rows {a} to {b} are not within the {self.height} rows of '
                             f'{self.path}')
        out = np.empty((b - a, self.width, 3), np.uint8)
        if a == b:
            return out
        try:
            return self._read_rows(a, b, out, channel_order == 'bgr')
        except (RasterError, MemoryError):
            raise
        except Exception as e:  # each codec has its own errors
            raise RasterError(f'cannot read rows {a} to {b} of {self.path}: '
                              f'{type(e).__name__}: {e}') from e

    def _read_rows(self, a: int, b: int, out: np.ndarray, bgr: bool) -> np.ndarray:
        raise NotImplementedError

    def read_whole(self, channel_order: str = 'bgr') -> np.ndarray:
        """Every row, (H, W, 3) uint8, for what needs the image whole (e.g.
        detection); an image decoded whole hands over its own array,
        converted in place, and is closed."""
        return self.read_rows(0, self.height, channel_order)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return (f'{type(self).__name__}({str(self.path)!r}, level {self.level}: '
                f'{self.width} x {self.height}, {self.channels} x {self.dtype})')


class DecodedRaster(RasterSource):
    """A PNG, JPEG or other PIL image, decoded whole by ``read_image`` (about
    7 bytes a pixel while decoding, 3 after) and served from memory."""
    decoded_whole = True

    def __init__(self, path: Path):
        super().__init__(path)
        self._image = read_image(path, channel_order='rgb')  # (H, W, 3) uint8
        self.height, self.width, self.channels = self._image.shape
        self.levels = ((self.height, self.width),)

    def _read_rows(self, a, b, out, bgr):
        out[:] = self._image[a:b, :, ::-1] if bgr else self._image[a:b]
        return out

    def read_whole(self, channel_order='bgr'):
        if channel_order not in ('rgb', 'bgr'):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        image, self._image = self._image, None
        if image is None:
            raise ValueError(f'{self.path}: closed')
        if channel_order == 'bgr':  # in place, a band at a time (no second image)
            step = max(1, (32 << 20) // (3 * self.width))
            for a in range(0, self.height, step):
                image[a:a + step] = image[a:a + step, :, ::-1].copy()
        return image

    def close(self):
        self._image = None


class TiffRaster(RasterSource):
    """A (Big)TIFF level read by ``tifffile`` a tile row or strip at a time
    (memory-mapped when its pixels are stored uncompressed and contiguous)."""

    def __init__(self, path: Path, level: Optional[int] = None):
        import tifffile
        super().__init__(path)
        self._tif = tifffile.TiffFile(path)
        try:
            self._open_level(0 if level is None else level)
        except BaseException:
            self._tif.close()
            raise

    def _open_level(self, level: int):
        from tifffile import PHOTOMETRIC
        path, series = self.path, self._tif.series[0]
        pages = [lv.keyframe for lv in series.levels]
        self.levels = tuple((p.imagelength, p.imagewidth) for p in pages)
        if not 0 <= level < len(pages):
            raise RasterError(f'{path}: no pyramid level {level}; its {len(pages)} level(s) are '
                              + ', '.join(f'{w} x {h}' for h, w in self.levels))
        self.level = level
        page = self._page = pages[level]
        shape = dict(zip(page.axes, page.shape))
        self.height, self.width = shape.get('Y', 0), shape.get('X', 0)
        self.channels = samples = shape.get('S', 1)
        if self.height < 1 or self.width < 1:
            raise RasterError(f'{path}: image of {self.width} x {self.height} pixels')
        photometric = page.photometric
        if photometric == PHOTOMETRIC.YCBCR and page.compression in (6, 7):
            photometric = PHOTOMETRIC.RGB  # the JPEG codec gives RGB
        kinds = {PHOTOMETRIC.MINISBLACK: (1, 2), PHOTOMETRIC.MINISWHITE: (1, 2),
                 PHOTOMETRIC.RGB: (3, 4), PHOTOMETRIC.PALETTE: (1,)}
        dtype = page.dtype
        if dtype is None or photometric not in kinds or samples not in kinds[photometric] \
                or set(page.axes) - set('YXS') \
                or not (dtype in (np.uint8, np.uint16) or dtype == np.bool_):
            raise RasterError(
                f'{path}: a {PHOTOMETRIC(photometric).name} TIFF of {samples} {dtype} '
                f'sample(s) per pixel (sample format {page.sampleformat}, axes {page.axes}, '
                f'shape {page.shape}); readable are grey (+ alpha), RGB(A) and palette '
                'images of 1, 8 or 16 bits')
        self.dtype = np.dtype(dtype)
        decode = page.decode
        if getattr(decode, '__name__', '').startswith('decode_raise'):
            try:  # tifffile's message: the codec or predictor it lacks
                decode(None, 0)
            except Exception as e:
                raise RasterError(f'{path}: cannot decode its pixels (compression '
                                  f'{page.compression!r}): {e}; imagecodecs may lack '
                                  'this codec') from e
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
        size = os.path.getsize(path)
        if ends and max(ends) > size:
            raise RasterError(f'{path}: truncated: its pixels end at byte {max(ends)}, '
                              f'the file has {size} bytes')
        self._convert = self._converter(photometric)
        self.profile = georeference(pages[0], self.levels[0], self.levels[level])
        self._cached = (-1, None)  # (segment row, its pixels): the last one decoded
        self._memmap = None
        if page.is_memmappable and self.dtype != np.bool_:
            planar = page.planarconfig == 2 and samples > 1
            self._memmap = np.memmap(
                path, dtype=self.dtype.newbyteorder(self._tif.byteorder), mode='r',
                offset=page.dataoffsets[0],
                shape=((samples, self.height, self.width) if planar
                       else (self.height, self.width, samples)))
            self._planar = planar
            return
        # segments: tiles, or strips of rowsperstrip rows, in planes of samples when planar
        self._seg_rows = page.tilelength if page.is_tiled else \
            min(page.rowsperstrip or self.height, self.height)
        self._seg_cols = page.tilewidth if page.is_tiled else self.width
        self._planes = samples if page.planarconfig == 2 else 1
        self._grid = (math.ceil(self.height / self._seg_rows),
                      math.ceil(self.width / self._seg_cols))
        if len(page.dataoffsets) != self._planes * self._grid[0] * self._grid[1]:
            raise RasterError(f'{path}: {len(page.dataoffsets)} tiles or strips, expected '
                              f'{self._planes} x {self._grid[0]} x {self._grid[1]}')
        self._decodeargs = {'_fullsize': page.is_tiled}
        if page.compression in (6, 7, 34892, 33007):  # JPEG
            self._decodeargs.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)

    def _converter(self, photometric):
        """(h, W, S) stored samples -> what ``fill_rows`` converts (grey, grey +
        alpha, RGB(A) of bool, uint8 or uint16)."""
        from tifffile import PHOTOMETRIC
        if photometric == PHOTOMETRIC.PALETTE:  # colormap: (3, 2^bits) uint16
            lut = np.ascontiguousarray((np.asarray(self._page.colormap).T >> 8)
                                       .astype(np.uint8))
            return lambda src: lut[src[..., 0]]
        if photometric == PHOTOMETRIC.MINISWHITE:  # ~v: max - v (unsigned), not v (bool)
            return lambda src: ~src
        return lambda src: src

    def _read_rows(self, a, b, out, bgr):
        src = self._stored_rows(a, b)
        convert = self._convert
        return fill_rows(out, lambda r0, r1: convert(src[r0:r1]), bgr,
                     self.dtype.itemsize * max(self.channels, 3))

    def _stored_rows(self, a: int, b: int) -> np.ndarray:
        """Rows a to b as stored: (b - a, W, S)."""
        if self._memmap is not None:
            rows = self._memmap[:, a:b] if self._planar else self._memmap[a:b]
            return np.moveaxis(rows, 0, -1) if self._planar else rows
        step = self._seg_rows
        first, last = a // step, (b - 1) // step
        if first == last:  # a view of one segment row
            return self._segment_row(first)[a - first * step:b - first * step]
        out = np.empty((b - a, self.width, self.channels), self.dtype)
        for i in range(first, last + 1):
            r0, r1 = max(a, i * step), min(b, (i + 1) * step)
            out[r0 - a:r1 - a] = self._segment_row(i)[r0 - i * step:r1 - i * step]
        return out

    def _segment_row(self, i: int) -> np.ndarray:
        """The i-th row of tiles (or the i-th strip) decoded: (rows, W, S);
        the last one decoded is kept, for the next band."""
        if self._cached[0] == i:
            return self._cached[1]
        self._cached = (-1, None)  # freed before the next is decoded
        page, fh = self._page, self._tif.filehandle
        rows, cols = self._grid
        r0 = i * self._seg_rows
        pixels = np.zeros((min(self.height, r0 + self._seg_rows) - r0, self.width,
                           self.channels), self.dtype)
        indices = [p * rows * cols + i * cols + j
                   for p in range(self._planes) for j in range(cols)]
        decode = page.decode
        for data, index in fh.read_segments([page.dataoffsets[k] for k in indices],
                                            [page.databytecounts[k] for k in indices],
                                            indices=indices, sort=True):
            segment, (s, _, y, x, _), _ = decode(data, index, **self._decodeargs)
            if segment is None:  # an empty tile: zeros
                continue
            h = min(segment.shape[1], r0 + pixels.shape[0] - y)
            w = min(segment.shape[2], self.width - x)
            pixels[y - r0:y - r0 + h, x:x + w, s:s + segment.shape[3]] = segment[0, :h, :w]
        self._cached = (i, pixels)
        return pixels

    def close(self):
        self._memmap = None
        self._cached = (-1, None)
        self._tif.close()


def open_raster(path: PathLike, level: Optional[int] = None) -> RasterSource:
    """The image at ``path``, to be read band by band (a context manager).

    A TIFF (BigTIFF, GeoTIFF, pyramidal whole-slide TIFF) is read a tile row
    or strip at a time, its pyramid ``level`` (default 0, the full
    resolution); anything else is decoded whole (``decoded_whole``).

    Raises FileNotFoundError for a missing file and :class:`RasterError` (or
    ``read_image``'s ImageReadError for non-TIFF files), naming the file, for
    one that cannot be read.
    """
    path = Path(path)
    head = file_head(path, RasterError)
    if head[:4] not in TIFF_MAGIC:
        if level not in (None, 0):
            raise RasterError(f'{path}: not a TIFF, so no pyramid level {level}')
        return DecodedRaster(path)
    try:
        return TiffRaster(path, level)
    except (RasterError, MemoryError):
        raise
    except Exception as e:  # tifffile's TiffFileError, struct.error, ...
        raise RasterError(f'cannot read TIFF {path}: {type(e).__name__}: {e}') from e


# ---------------------------------------------------------------- georeference

def _geokeys(tags: Dict[int, tuple]) -> Dict[int, int]:
    """The GeoKeys stored inline (SHORT values), {key: value}."""
    directory = tags.get(34735, ())
    return {directory[k]: directory[k + 3] for k in range(4, len(directory) - 3, 4)
            if directory[k + 1] == 0}


def georeference(page, size0: Tuple[int, int], size: Tuple[int, int]) -> Optional[dict]:
    """The profile (crs, transform, geotiff_tags) of a level of ``size``
    (height, width) of the image whose full-resolution page is ``page``
    (of ``size0``), or None when that page has no GeoTIFF tags."""
    tags = {t.code: t for t in page.tags.values() if t.code in GEOTIFF_TAGS}
    if 34735 not in tags:
        return None
    values = {code: (t.value if isinstance(t.value, (tuple, str)) else (t.value,))
              for code, t in tags.items()}
    keys = _geokeys(values)
    crs = None
    for key in (3072, 2048):  # ProjectedCSType, GeographicType
        if keys.get(key, 32767) not in (0, 32767):  # 32767: user-defined
            crs = f'EPSG:{keys[key]}'
            break
    point = keys.get(1025) == 2  # GTRasterType PixelIsPoint: tie points at pixel centres
    if 34264 in values:
        m = values[34264]
        transform = (m[0], m[1], m[3], m[4], m[5], m[7])
    elif 33922 in values and 33550 in values:
        i, j, _, x, y, _ = values[33922][:6]
        sx, sy = values[33550][:2]
        transform = (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
    else:
        transform = None
    if transform is not None and point:  # as GDAL: to the corner of pixel (0, 0)
        a, b, c, d, e, f = transform
        transform = (a, b, c - (a + b) / 2, d, e, f - (d + e) / 2)
    geotiff_tags = tuple((code, int(t.dtype), t.count, t.value) for code, t in tags.items())
    if transform is not None and size != size0:  # a pyramid level: larger pixels
        fy, fx = size0[0] / size[0], size0[1] / size[1]
        a, b, c, d, e, f = transform
        transform = (a * fx, b * fy, c, d * fx, e * fy, f)
        a, b, c, d, e, f = transform
        if point:  # the level's tie point is at its pixel (0, 0)'s centre
            c, f = c + (a + b) / 2, f + (d + e) / 2
        matrix = (a, b, 0.0, c, d, e, 0.0, f, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        geotiff_tags = tuple(t for t in geotiff_tags if t[0] not in (33550, 33922, 34264)) \
            + ((34264, 12, 16, matrix),)
    return dict(crs=crs, transform=transform, geotiff_tags=geotiff_tags)


# ---------------------------------------------------------------- writing

class _Aborted(Exception):
    """Raised in the writing thread when the label map will not be finished."""


class LabelWriter:
    """A (H, W) label map written band by band as a tiled, compressed
    (Geo)TIFF, never held whole: one row of tiles is buffered (and one more
    being compressed).

    Args:
        path: the TIFF to write; written as ``path + '.part'``, renamed to
            ``path`` by :meth:`close` once every row is written.
        height, width: the label map's size.
        dtype: np.uint8 (up to 255 classes) or np.uint16.
        profile: the georeference to give the labels (``RasterSource.profile``
            of the input: its GeoTIFF tags are copied), or a dict with ``crs``
            and ``transform`` only (set by rasterio), or None.
        tile: tile side, a multiple of 16.
        compression: tifffile's name ('zlib': deflate, 'lzw', 'zstd', None).
        bigtiff: None: BigTIFF when the uncompressed labels pass 4 GB.
        cog: rewrite the finished file as a Cloud Optimized GeoTIFF with
            nearest-neighbour overviews (GDAL's COG driver; needs rasterio).

    Use as a context manager: an exception inside the ``with`` (or in
    writing) removes the partial file and leaves nothing under ``path``::

        with LabelWriter('labels.tif', h, w, profile=src.profile) as out:
            out.write_rows(0, labels_of_rows_0_to_63)   # (64, w)
            out.write_rows(64, ...)                      # rows in order
    """

    def __init__(self, path: PathLike, height: int, width: int, dtype=np.uint8,
                 profile: Optional[dict] = None, tile: int = 256,
                 compression: Optional[str] = 'zlib', bigtiff: Optional[bool] = None,
                 cog: bool = False):
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + '.part')
        self.height, self.width = int(height), int(width)
        self.dtype = np.dtype(dtype)
        if self.height < 1 or self.width < 1:
            raise ValueError(f'a label map of {width} x {height} pixels')
        if self.dtype not in (np.uint8, np.uint16):
            raise ValueError(f'labels are written as uint8 or uint16, not {self.dtype}')
        if tile < 16 or tile % 16:
            raise ValueError(f'tile must be a multiple of 16 (TIFF), got {tile}')
        self.tile, self.compression, self.cog = tile, compression, cog
        self.bigtiff = (self.height * self.width * self.dtype.itemsize > BIGTIFF_BYTES
                        if bigtiff is None else bigtiff)
        profile = profile or {}
        self._geotiff_tags = [(*t, True) for t in profile.get('geotiff_tags', ())]
        self._crs_transform = None
        if not self._geotiff_tags and (profile.get('crs') or profile.get('transform')):
            require_rasterio('a profile without GeoTIFF tags')
            self._crs_transform = (profile.get('crs'), profile.get('transform'))
        if cog:
            require_rasterio('cog=True')
            if compression not in GDAL_COMPRESSION:
                raise ValueError(f'cog=True: compression {compression!r} is not one of '
                                 f'{sorted(map(str, GDAL_COMPRESSION))}')
        self.rows_written = 0
        self._thread = None
        self._error = None
        self._tiles_wide = math.ceil(self.width / tile)

    # ------------------------------------------------ the caller's side
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def open(self):
        """Start writing ``path + '.part'`` (replacing a stale one)."""
        if self._thread is not None:
            raise RuntimeError(f'{self.path} is already being written')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue = queue.Queue(maxsize=1)
        self._band = self._new_band()
        self._band_filled = 0
        self._error = None
        # opened here, so that a path that cannot be written fails now
        self._file = open(self.part, 'wb')  # noqa: SIM115  closed by the writing thread
        self._thread = threading.Thread(target=self._write_file, daemon=True,
                                        name=f'LabelWriter({self.path.name})')
        self._thread.start()

    def write_rows(self, a: int, labels: np.ndarray):
        """Write rows ``a`` to ``a + len(labels)`` of the label map: ``labels``
        (h, W) of any integer type within ``dtype``'s range; the bands arrive
        in order (``a`` is the number of rows written so far)."""
        if self._thread is None:
            raise RuntimeError(f'{self.path}: write_rows outside the with block (open first)')
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != self.width or labels.dtype.kind not in 'ui':
            raise ValueError(f'labels must be (h, {self.width}) integers, got {labels.dtype} '
                             f'{labels.shape}')
        if a != self.rows_written:
            raise ValueError(f'{self.path}: rows must come in order: row {a} given, '
                             f'{self.rows_written} expected')
        h = labels.shape[0]
        if a + h > self.height:
            raise ValueError(f'{self.path}: rows {a} to {a + h} of a {self.height}-row map')
        if labels.dtype != self.dtype and h:
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi > np.iinfo(self.dtype).max:
                raise ValueError(f'labels from {lo} to {hi} do not fit {self.dtype.name}')
        i = 0
        while i < h:
            n = min(h - i, self.tile - self._band_filled)
            self._band[self._band_filled:self._band_filled + n, :self.width] = labels[i:i + n]
            self._band_filled += n
            i += n
            if self._band_filled == self.tile or a + i == self.height:
                self._send(self._band)
                self._band, self._band_filled = self._new_band(), 0
        self.rows_written += h

    def close(self):
        """Finish the file and rename it to ``path``; raises (removing the
        partial file) when rows are missing or writing failed."""
        if self._thread is None:
            return
        if self.rows_written != self.height:
            self.abort()
            raise ValueError(f'{self.path}: only {self.rows_written} of {self.height} rows '
                             'were written; the partial file was removed')
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._failure()
        try:
            if self._crs_transform is not None:
                self._set_crs_transform()
            if self.cog:
                self._rewrite_as_cog()
            os.replace(self.part, self.path)
        except BaseException as e:
            self._remove_partial()
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise self._disk_full(e) from e
            raise

    def abort(self):
        """Stop writing and remove the partial file (``path`` is untouched)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            while thread.is_alive():
                try:  # the writing thread raises _Aborted when it gets None
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            thread.join()
        self._remove_partial()

    # ------------------------------------------------ helpers
    def _new_band(self) -> np.ndarray:
        """One row of tiles, zeros past the right and bottom edges."""
        return np.zeros((self.tile, self._tiles_wide * self.tile), self.dtype)

    def _send(self, band: np.ndarray):
        while True:
            if not self._thread.is_alive():
                self._thread.join()
                self._thread = None
                raise self._failure()
            try:
                self._queue.put(band, timeout=0.1)
                return
            except queue.Full:
                continue

    def _failure(self) -> OSError:
        """The writing thread's error, the partial file removed."""
        self._remove_partial()
        e = self._error
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            error = self._disk_full(e)
        else:
            error = RasterWriteError(f'cannot write {self.path}: {type(e).__name__}: {e}; '
                                     f'the partial file {self.part.name} was removed')
        error.__cause__ = e
        return error

    def _disk_full(self, e: OSError) -> RasterWriteError:
        return RasterWriteError(
            errno.ENOSPC, f'the disk is full (no space left on device) while writing '
            f'{self.path} ({self.rows_written} of {self.height} rows given); the partial '
            f'file {self.part.name} was removed: {e}', str(self.path))

    def _remove_partial(self):
        for p in (self.part, self.part.with_name(self.part.name[:-5] + '.cog.part')):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def _tiles(self):
        """Tiles in TIFF order, a row of them per band received."""
        t = self.tile
        for _ in range(math.ceil(self.height / t)):
            band = self._queue.get()
            if band is None:
                raise _Aborted
            for j in range(self._tiles_wide):
                yield band[:, j * t:(j + 1) * t]
            del band

    def _write_file(self):
        """The writing thread: tifffile pulls the tiles as they are sent."""
        import tifffile
        try:
            with self._file, tifffile.TiffWriter(self._file, bigtiff=self.bigtiff) as tif:
                tif.write(self._tiles(), shape=(self.height, self.width), dtype=self.dtype,
                          tile=(self.tile, self.tile), compression=self.compression,
                          photometric='minisblack', metadata=None, maxworkers=1,
                          extratags=self._geotiff_tags)
        except BaseException as e:  # noqa: B036  reported by the caller's next call
            self._error = e

    def _set_crs_transform(self):
        rasterio = require_rasterio('a profile without GeoTIFF tags')
        from affine import Affine
        from rasterio.errors import NotGeoreferencedWarning
        crs, transform = self._crs_transform
        with warnings.catch_warnings():  # not yet, indeed
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            ds = rasterio.open(self.part, 'r+')
        with ds:
            if crs is not None:
                ds.crs = crs
            if transform is not None:
                ds.transform = Affine(*tuple(transform)[:6])

    def _rewrite_as_cog(self):
        rasterio = require_rasterio('cog=True')
        cog_part = self.part.with_name(self.part.name[:-5] + '.cog.part')
        rasterio.shutil.copy(self.part, cog_part, driver='COG',
                             COMPRESS=GDAL_COMPRESSION[self.compression],
                             BLOCKSIZE=self.tile, OVERVIEW_RESAMPLING='NEAREST',
                             BIGTIFF='YES' if self.bigtiff else 'IF_SAFER')
        os.replace(cog_part, self.part)
