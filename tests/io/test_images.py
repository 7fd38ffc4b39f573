"""ufo_mm.io.images: PNG, JPEG, TIFF and BigTIFF give the stored pixels as one
(H, W, 3) uint8 array (JPEG: as OpenCV decodes it), grey / alpha / palette /
16-bit / 1-bit pixels converted as documented, EXIF orientation applied, images
above PIL's decompression-bomb limit read with the limit restored afterwards,
corrupt files refused with an error naming them, and no full-size copy made
beyond the one array; 8- and 16-bit label PNGs read back equal.
"""
import re

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.models.memory_tracker import traced_peak
from ufo_mm.io import images
from ufo_mm.io.images import ImageReadError, lifted_pil_limit, read_image, write_labels

HW = (67, 45)  # odd sizes: no band or tile divides them


@pytest.fixture(scope='module')
def noise():
    """(67, 45, 3) uint8 RGB random pixels (lossless formats)."""
    return np.random.default_rng(0).integers(0, 256, HW + (3,), dtype=np.uint8)


@pytest.fixture(scope='module')
def smooth():
    """(301, 457, 3) uint8 RGB gradients (JPEG keeps them within a few levels)."""
    y, x = np.mgrid[0:301, 0:457]
    return np.stack([x * 255 // 456, y * 255 // 300, (x + y) % 256], -1).astype(np.uint8)


def grey3(g):
    return np.repeat(g[..., None], 3, axis=-1)



# ---------------------------------------------------------------- reading

def test_png_round_trip_in_both_channel_orders(noise, tmp_path):
    path = tmp_path / 'a.png'
    Image.fromarray(noise).save(path)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous and np.array_equal(rgb, noise)
    bgr = read_image(path, channel_order='bgr')
    assert bgr.flags.c_contiguous and np.array_equal(bgr, noise[..., ::-1])
    assert np.array_equal(bgr, cv2.imread(str(path)))  # what mmseg's LoadImageFromFile reads
    with pytest.raises(ValueError, match='channel_order'):
        read_image(path, channel_order='rgba')


def test_jpeg_as_opencv_decodes_it(smooth, tmp_path):
    path = tmp_path / 'a.jpg'
    cv2.imwrite(str(path), smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    rgb = read_image(path)
    assert rgb.shape == smooth.shape
    assert np.array_equal(rgb, cv2.imread(str(path))[..., ::-1])
    assert np.abs(rgb.astype(int) - smooth).mean() < 2


def test_jpeg_exif_orientation_applied_as_opencv_does(smooth, tmp_path):
    path = tmp_path / 'rotated.jpg'
    im = Image.fromarray(smooth)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(path, exif=exif, quality=95)
    rgb = read_image(path)
    assert rgb.shape == (457, 301, 3)
    assert np.array_equal(rgb, cv2.imread(str(path))[..., ::-1])


TIFF_KINDS = {
    'classic': dict(),
    'bigtiff-tiled-deflate': dict(bigtiff=True, tile=(16, 16), compression='zlib'),
    'lzw': dict(compression='lzw'),
    'planar': dict(planarconfig='separate'),
}


@pytest.mark.parametrize('kind', list(TIFF_KINDS))
def test_tiff_round_trip(kind, noise, tmp_path):
    path = tmp_path / f'{kind}.tif'
    options = TIFF_KINDS[kind]
    data = np.moveaxis(noise, -1, 0) if kind == 'planar' else noise
    tifffile.imwrite(path, data, photometric='rgb', **options)
    assert path.read_bytes()[:4] == (b'II+\x00' if 'bigtiff' in kind else b'II*\x00')
    assert np.array_equal(read_image(path), noise)
    bgr = read_image(path, channel_order='bgr')
    assert bgr.flags.c_contiguous and np.array_equal(bgr, noise[..., ::-1])


def test_jpeg_compressed_tiled_tiff(smooth, tmp_path):
    path = tmp_path / 'slide.tif'  # as whole-slide scanners write them
    tifffile.imwrite(path, smooth, photometric='rgb', tile=(64, 64), compression='jpeg',
                     compressionargs=dict(level=95))
    rgb = read_image(path)
    assert rgb.shape == smooth.shape and np.abs(rgb.astype(int) - smooth).mean() < 2


def test_grey_alpha_palette_and_16_bit_png(noise, tmp_path):
    g = noise[..., 0]
    Image.fromarray(g).save(tmp_path / 'grey.png')
    assert np.array_equal(read_image(tmp_path / 'grey.png'), grey3(g))
    rgba = np.dstack([noise, noise[..., 1]])
    Image.fromarray(rgba).save(tmp_path / 'rgba.png')
    assert np.array_equal(read_image(tmp_path / 'rgba.png'), noise)  # alpha dropped
    Image.fromarray(noise[..., :2].copy(), 'LA').save(tmp_path / 'la.png')
    assert np.array_equal(read_image(tmp_path / 'la.png'), grey3(g))
    palette = Image.fromarray(noise).quantize(16)
    palette.save(tmp_path / 'p.png')
    assert np.array_equal(read_image(tmp_path / 'p.png'), np.asarray(palette.convert('RGB')))
    g16 = np.random.default_rng(1).integers(0, 65536, HW, dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'g16.png'), g16)
    assert np.array_equal(read_image(tmp_path / 'g16.png'), grey3((g16 >> 8).astype(np.uint8)))
    c16 = np.random.default_rng(2).integers(0, 65536, HW + (3,), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'c16.png'), c16)  # BGR
    assert np.array_equal(read_image(tmp_path / 'c16.png', channel_order='bgr'),
                          (c16 >> 8).astype(np.uint8))
    # the same 8 bits as OpenCV's conversion (mmseg's LoadImageFromFile)
    for name in ('grey.png', 'rgba.png', 'p.png', 'g16.png', 'c16.png'):
        assert np.array_equal(read_image(tmp_path / name, channel_order='bgr'),
                              cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR)), name


def test_grey_alpha_palette_bilevel_and_16_bit_tiff(noise, tmp_path):
    g = noise[..., 0]
    tifffile.imwrite(tmp_path / 'grey.tif', g, photometric='minisblack')
    assert np.array_equal(read_image(tmp_path / 'grey.tif'), grey3(g))
    tifffile.imwrite(tmp_path / 'white.tif', g, photometric='miniswhite')  # 0 is white
    assert np.array_equal(read_image(tmp_path / 'white.tif'), grey3(255 - g))
    rgba = np.dstack([noise, g])
    tifffile.imwrite(tmp_path / 'rgba.tif', rgba, photometric='rgb', extrasamples=['unassalpha'])
    assert np.array_equal(read_image(tmp_path / 'rgba.tif'), noise)
    colormap = np.random.default_rng(3).integers(0, 65536, (3, 256), dtype=np.uint16)
    tifffile.imwrite(tmp_path / 'p.tif', g, photometric='palette', colormap=colormap)
    assert np.array_equal(read_image(tmp_path / 'p.tif'), (colormap.T >> 8).astype(np.uint8)[g])
    bits = g > 127
    tifffile.imwrite(tmp_path / 'bits.tif', bits, photometric='minisblack')
    assert np.array_equal(read_image(tmp_path / 'bits.tif'), grey3(bits.astype(np.uint8) * 255))
    c16 = np.random.default_rng(4).integers(0, 65536, HW + (3,), dtype=np.uint16)
    tifffile.imwrite(tmp_path / 'c16.tif', c16, photometric='rgb')
    assert np.array_equal(read_image(tmp_path / 'c16.tif'), (c16 >> 8).astype(np.uint8))


@pytest.mark.parametrize('kind', ['float', 'five-band', 'cmyk'])
def test_unsupported_pixels_are_refused_naming_the_file(kind, tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / f'{kind}.tif'
    if kind == 'float':
        tifffile.imwrite(path, rng.random((10, 12, 3), dtype=np.float32), photometric='rgb')
    elif kind == 'five-band':
        tifffile.imwrite(path, rng.integers(0, 256, (10, 12, 5), dtype=np.uint8),
                         photometric='minisblack', planarconfig='contig')
    else:
        tifffile.imwrite(path, rng.integers(0, 256, (10, 12, 4), dtype=np.uint8),
                         photometric='separated')
    with pytest.raises(ImageReadError, match=re.escape(str(path))):
        read_image(path)


def test_image_above_pil_limit_is_read_and_the_limit_restored(noise, tmp_path, monkeypatch):
    """PIL refuses images of more than twice ``MAX_IMAGE_PIXELS`` (89 Mpx by
    default); lowered here so that a small image is one."""
    path = tmp_path / 'huge.png'
    Image.fromarray(noise).save(path)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    with pytest.raises(Image.DecompressionBombError):  # the simulation works
        Image.open(path)
    assert np.array_equal(read_image(path), noise)
    assert Image.MAX_IMAGE_PIXELS == 100
    broken = tmp_path / 'huge_cut.png'
    broken.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ImageReadError):
        read_image(broken)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored after an error too
    with pytest.raises(RuntimeError), lifted_pil_limit():
        assert Image.MAX_IMAGE_PIXELS is None
        raise RuntimeError
    assert Image.MAX_IMAGE_PIXELS == 100


def test_own_pixel_cap_refuses_before_decoding(noise, tmp_path):
    for name in ('a.png', 'a.tif'):
        path = tmp_path / name
        Image.fromarray(noise).save(path)
        with pytest.raises(ImageReadError, match=f'{re.escape(str(path))}.*max_pixels'):
            read_image(path, max_pixels=HW[0] * HW[1] - 1)
        assert read_image(path, max_pixels=HW[0] * HW[1]).shape == HW + (3,)


CORRUPTIONS = {
    'cut.png': lambda data: data[:len(data) // 2],
    'cut.jpg': lambda data: data[:len(data) // 2],
    'cut.tif': lambda data: data[:len(data) // 2],
    'cut_big.tif': lambda data: data[:len(data) // 2],
    'garbage.png': lambda data: data[:8] + b'\x00' * 200,
    'not_an_image.jpg': lambda data: b'hello, world' * 10,
    'empty.png': lambda data: b'',
}


@pytest.mark.parametrize('name', list(CORRUPTIONS))
def test_corrupt_files_raise_an_error_naming_them(name, smooth, tmp_path):
    good = tmp_path / ('good' + name[name.index('.'):])
    if good.suffix == '.tif':
        tifffile.imwrite(good, smooth, photometric='rgb', bigtiff='big' in name,
                         tile=(64, 64) if 'big' in name else None)
    else:
        Image.fromarray(smooth).save(good)
    path = tmp_path / name
    path.write_bytes(CORRUPTIONS[name](good.read_bytes()))
    with pytest.raises(ImageReadError, match=re.escape(str(path))):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.png'):
        read_image(tmp_path / 'nothing.png')


@pytest.mark.parametrize('name', ['rgb.tif', 'grey.tif', 'rgb.png'])
def test_reading_holds_one_image_array_and_a_band(name, tmp_path, monkeypatch):
    """No full-size copy: RGB -> BGR in place (TIFF), grey -> 3 channels band
    by band. (PIL's own 4-byte-per-pixel buffer is outside Python's tracing.)"""
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (512, 384, 3), dtype=np.uint8)
    path = tmp_path / name
    if name == 'rgb.png':
        Image.fromarray(rgb).save(path, compress_level=1)
    else:
        tifffile.imwrite(path, rgb if name == 'rgb.tif' else rgb[..., 0])
    monkeypatch.setattr(images, 'BAND_BYTES', 1 << 16)
    image, peak = traced_peak(lambda: read_image(path, channel_order='bgr'))
    assert image.shape == rgb.shape
    assert peak < 1.15 * image.nbytes + (1 << 20), (peak, image.nbytes)


# ---------------------------------------------------------------- writing

@pytest.mark.parametrize('num_classes, dtype', [(9, np.uint8), (255, np.uint8),
                                                (256, np.uint16), (300, np.uint16)])
def test_label_png_is_8_bit_up_to_255_classes_then_16_bit(num_classes, dtype, tmp_path):
    labels = np.random.default_rng(7).integers(0, num_classes, (301, 457))
    labels[0, 0] = num_classes - 1
    for given in (labels.astype(dtype), labels):  # the core's dtype, or int64
        path = write_labels(tmp_path / 'labels.png', given, num_classes)
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert back.dtype == dtype and back.shape == (301, 457)
        assert np.array_equal(back, labels)


def test_label_png_checks_its_input(tmp_path):
    labels = np.zeros((4, 5), np.uint16)
    assert cv2.imread(str(write_labels(tmp_path / 'a.png', labels)),
                      cv2.IMREAD_UNCHANGED).dtype == np.uint16  # dtype kept without num_classes
    with pytest.raises(ValueError, match='do not fit uint8'):
        write_labels(tmp_path / 'b.png', labels + 256, num_classes=9)
    with pytest.raises(ValueError, match='do not fit'):
        write_labels(tmp_path / 'b.png', labels.astype(np.int64) - 1, num_classes=9)
    with pytest.raises(ValueError, match='num_classes'):
        write_labels(tmp_path / 'b.png', labels.astype(np.int64))
    with pytest.raises(ValueError, match='PNG'):
        write_labels(tmp_path / 'b.jpg', labels)
    with pytest.raises(ValueError, match=r'\(H, W\) integer'):
        write_labels(tmp_path / 'b.png', np.zeros((4, 5, 1), np.uint8))
    with pytest.raises(ValueError, match=r'\(H, W\) integer'):
        write_labels(tmp_path / 'b.png', np.zeros((4, 5), np.float32))
