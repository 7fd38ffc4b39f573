"""Image I/O for whole-image segmentation of large images
(``ufo_mm.apis.large_image``) and the command over it, ``tools/infer_large.py``.

Reading: PNG, JPEG, TIFF and BigTIFF give the stored pixels as one (H, W, 3)
uint8 array (JPEG: as OpenCV decodes it), grey / alpha / palette / 16-bit /
1-bit pixels converted as documented, EXIF orientation applied, images above
PIL's decompression-bomb limit read with the limit restored afterwards,
corrupt files refused with an error naming them, and no full-size copy made
beyond the one array. Writing: 8- and 16-bit label PNGs read back equal, the
overlay's size and colours, shrunk band by band.

The command (trained demo segmentor, 2 iterations) writes full-size labels
equal to mmseg's own whole-image ``inference_model`` and prints its JSON line;
those tests need the streaming core and are skipped without it.
"""
import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from ufo_mm.apis import large_image
from ufo_mm.apis.large_image import (ImageReadError, ProgressBarCallback, lifted_pil_limit,
                                     overlay_size, read_image, shrink_image, shrink_labels,
                                     write_labels, write_overlay)

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


def traced_peak(fn):
    """(result, peak bytes numpy and Python allocated while ``fn`` ran)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


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
    monkeypatch.setattr(large_image, 'BAND_BYTES', 1 << 16)
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


def test_overlay_size():
    assert overlay_size(301, 457, 200) == (132, 200)
    assert overlay_size(457, 301, 200) == (200, 132)
    assert overlay_size(301, 457, 2048) == (301, 457)  # never enlarged
    assert overlay_size(32768, 32768, 2048) == (2048, 2048)
    with pytest.raises(ValueError):
        overlay_size(10, 10, 0)


def test_shrinking_band_by_band_is_opencv_area_resize(monkeypatch):
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)
    whole = cv2.resize(image, (150, 100), interpolation=cv2.INTER_AREA)
    monkeypatch.setattr(large_image, 'BAND_BYTES', 3 * 600 * 4 * 7)  # 7 output rows a band
    assert np.array_equal(shrink_image(image, (100, 150)), whole)
    # a BGR view of it (negative channel stride) shrinks to the same picture
    assert np.array_equal(shrink_image(np.ascontiguousarray(image[..., ::-1])[..., ::-1],
                                       (100, 150)), whole)
    labels = np.arange(400 * 600).reshape(400, 600)
    small = shrink_labels(labels, (100, 150))
    assert np.array_equal(small, labels[2::4, 2::4])  # each output pixel's centre


def test_overlay_blends_palette_over_shrunk_image(smooth, tmp_path, monkeypatch):
    labels = np.zeros(smooth.shape[:2], np.uint8)
    labels[:, 200:] = 1
    labels[150:, :] = 2
    labels[:10, :10] = 255  # ignored: black
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    monkeypatch.setattr(large_image, 'BAND_BYTES', 1 << 16)
    bgr = np.ascontiguousarray(smooth[..., ::-1])
    # opacity 1: the palette colour of the nearest label (PNG: exact)
    path = write_overlay(tmp_path / 'o.png', bgr[..., ::-1], labels, palette, max_side=200,
                         opacity=1.0)
    picture = cv2.imread(str(path))[..., ::-1]
    assert picture.shape == (132, 200, 3)
    colours = np.array(palette + [[0, 0, 0]] * 253, np.uint8)
    assert np.array_equal(picture, colours[shrink_labels(labels, (132, 200))])
    # opacity 0: the shrunk image
    path = write_overlay(tmp_path / 'o0.png', smooth, labels, palette, max_side=200, opacity=0)
    assert np.array_equal(cv2.imread(str(path))[..., ::-1], shrink_image(smooth, (132, 200)))
    # the default: half and half, as JPEG
    path = write_overlay(tmp_path / 'o.jpg', smooth, labels, palette, max_side=2048)
    picture = cv2.imread(str(path))[..., ::-1].astype(int)
    assert picture.shape == smooth.shape
    expected = (smooth.astype(int) + colours[labels]) / 2
    assert np.abs(picture - expected).mean() < 3
    with pytest.raises(ValueError, match='differ in size'):
        write_overlay(tmp_path / 'x.jpg', smooth, labels[1:], palette)


def test_overlay_copies_only_bands_of_a_large_image(monkeypatch, tmp_path):
    image = np.random.default_rng(9).integers(0, 256, (2048, 1536, 3), dtype=np.uint8)
    labels = np.zeros(image.shape[:2], np.uint8)
    write_overlay(tmp_path / 'warm.jpg', image[:8, :8], labels[:8, :8], [[1, 2, 3]])  # imports
    monkeypatch.setattr(large_image, 'BAND_BYTES', 1 << 16)
    view = image[..., ::-1]  # the tool passes the RGB view of its BGR array
    _, peak = traced_peak(lambda: write_overlay(tmp_path / 'o.jpg', view, labels, [[1, 2, 3]],
                                                max_side=64))
    assert peak < image.nbytes / 16, (peak, image.nbytes)  # a band of 32 rows is 1/64


def test_progress_callback_draws_an_mmengine_bar():
    out = io.StringIO()
    progress = ProgressBarCallback(out)
    for done in (0, 1, 3, 4):
        progress(done, 4)
    text = out.getvalue()
    assert '0/4' in text and '1/4' in text and '3/4' in text and '4/4' in text
    assert text.endswith('\n') and text.count('\n') == 1


# ---------------------------------------------------------------- the command

DEMO = 'configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py'
SCENE_HW = (301, 457)  # odd: neither the patch, the padding nor a band divides it
JSON_KEYS = {'height', 'width', 'seconds', 'peak_rss_gb', 'labels', 'overlay', 'num_classes',
             'band_rows', 'image_read_seconds'}


@pytest.fixture(scope='module')
def demo_ckpt(tmp_path_factory):
    """The UperNet demo trained 2 iterations by tools/train.py (once the
    streaming core is there)."""
    pytest.importorskip('ufo_mm.streaming')
    from tests.tiny_seg_training import run_train
    from ufo_mm.datasets import make_ade20k
    root = make_ade20k(tmp_path_factory.mktemp('ade'), num_train=4, num_val=1, img_size=64)
    work = tmp_path_factory.mktemp('train')
    run_train(DEMO, work, '--cfg-options', 'train_cfg.max_iters=2',
              'train_dataloader.batch_size=2',
              *[f'{loader}.dataset.data_root={root}'
                for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')])
    return work / 'iter_2.pth'


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    from ufo_mm.datasets.shapes import image_rng
    from ufo_mm.datasets.synthetic_ade import render_sample
    rgb, _ = render_sample(image_rng(4321, 1), SCENE_HW)
    path = tmp_path_factory.mktemp('scene') / 'scene.png'
    cv2.imwrite(str(path), rgb[..., ::-1])
    return path


@pytest.fixture(scope='module')
def whole_image_labels(demo_ckpt, scene):
    """mmseg's own inference_model on the whole image, no Resize in the test pipeline."""
    from mmseg.apis import inference_model, init_model
    model = init_model(DEMO, str(demo_ckpt), device='cpu')
    model.cfg.test_pipeline = [t for t in model.cfg.test_pipeline if t['type'] != 'Resize']
    result = inference_model(model, cv2.imread(str(scene)))
    return result.pred_sem_seg.data[0].numpy()


def infer_large(*args, check=True):
    from tests.tiny_seg_training import REPO, tool_env
    proc = subprocess.run([sys.executable, str(REPO / 'tools/infer_large.py'), *map(str, args)],
                          cwd=str(REPO), env=tool_env(), capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize('band_rows', [None, 48])
def test_command_writes_full_size_labels_equal_to_whole_image_inference(
        band_rows, demo_ckpt, scene, whole_image_labels, tmp_path):
    extra = [] if band_rows is None else ['--band-rows', band_rows]
    proc = infer_large(DEMO, demo_ckpt, scene, '--out-dir', tmp_path, '--overlay-side', 200,
                       *extra)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert JSON_KEYS <= row.keys()
    assert (row['height'], row['width']) == SCENE_HW and row['num_classes'] == 9
    assert row['band_rows'] == band_rows and row['seconds'] > 0
    assert 0 < row['peak_rss_gb'] < 6  # GiB, of this small run
    assert row['labels'] == str(tmp_path / 'scene_labels.png')
    labels = cv2.imread(row['labels'], cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and labels.shape == SCENE_HW
    assert np.array_equal(labels, whole_image_labels)
    overlay = cv2.imread(str(tmp_path / 'scene_overlay.jpg'))
    assert row['overlay'] == str(tmp_path / 'scene_overlay.jpg')
    assert overlay.shape == (132, 200, 3)
    assert re.search(r'(\d+)/\1, ', proc.stderr), proc.stderr[-2000:]  # the bar, finished


def test_command_refuses_a_corrupt_image_naming_it(demo_ckpt, scene, tmp_path):
    broken = tmp_path / 'broken.png'
    broken.write_bytes(scene.read_bytes()[:1000])
    proc = infer_large(DEMO, demo_ckpt, broken, '--out-dir', tmp_path, check=False)
    assert proc.returncode != 0
    assert f'cannot read image {broken}' in proc.stderr and 'Traceback' not in proc.stderr
    assert not list(tmp_path.glob('*_labels.png'))


@pytest.fixture(scope='module')
def scene_tif(scene):
    """The scene's pixels as a tiled, compressed TIFF (read band by band)."""
    path = scene.with_suffix('.tif')
    tifffile.imwrite(path, cv2.imread(str(scene))[..., ::-1], photometric='rgb',
                     tile=(64, 64), compression='zlib')
    return path


def test_command_reads_a_tiff_band_by_band_and_writes_labels_band_by_band(
        demo_ckpt, scene_tif, whole_image_labels, tmp_path):
    """A tiled TIFF: read band by band, labels written as a tiled TIFF, equal
    to mmseg's inference on the whole image; with the token tensors on disk
    and a PNG of labels too."""
    proc = infer_large(DEMO, demo_ckpt, scene_tif, '--out-dir', tmp_path, '--overlay-side', 200)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 'read band by band' in proc.stderr
    assert row['labels'] == str(tmp_path / 'scene_labels.tif') and row['labels_format'] == 'tif'
    assert row['token_place'] == 'compute'
    assert np.array_equal(tifffile.imread(row['labels']), whole_image_labels)
    assert cv2.imread(row['overlay']).shape == (132, 200, 3)
    out = tmp_path / 'disk'
    proc = infer_large(DEMO, demo_ckpt, scene_tif, '--out-dir', out, '--token-device', 'disk',
                       '--labels-format', 'png', '--max-ram-gb', 64)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row['token_place'] == 'disk' and row['max_ram_gb'] == 64
    labels = cv2.imread(row['labels'], cv2.IMREAD_UNCHANGED)
    assert np.array_equal(labels, whole_image_labels)
    assert sorted(os.listdir(out)) == ['scene_labels.png', 'scene_overlay.jpg']  # no scratch


def test_command_refuses_a_truncated_tiff_and_a_too_small_budget(
        demo_ckpt, scene_tif, tmp_path):
    broken = tmp_path / 'broken.tif'
    broken.write_bytes(scene_tif.read_bytes()[:-5000])
    proc = infer_large(DEMO, demo_ckpt, broken, '--out-dir', tmp_path / 'a', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f'{broken}: truncated' in proc.stderr
    proc = infer_large(DEMO, demo_ckpt, scene_tif, '--out-dir', tmp_path / 'b',
                       '--max-ram-gb', 0.05, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert re.search(r'infer_large: a memory budget of 0\.05 GiB is too small for one band: '
                     r'this run needs at least \d+\.\d\d GiB', proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / 'a').exists() and os.listdir(tmp_path / 'b') == []


DET_DEMO = 'configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py'
DET_KEYS = {'height', 'width', 'seconds', 'peak_rss_gb', 'instances', 'overlay',
            'num_instances', 'band_rows', 'image_read_seconds'}


@pytest.fixture(scope='module')
def det_ckpt(tmp_path_factory):
    """The Mask R-CNN demo's initial weights, saved as a checkpoint with its classes."""
    import torch

    from tests.tiny_seg_training import REPO
    from ufo_mm.builder import build_model
    model = build_model(str(REPO / DET_DEMO))
    model.init_weights()
    path = tmp_path_factory.mktemp('det') / 'init.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(model.dataset_meta))), path)
    return path


def test_command_detects_on_the_whole_image_as_mmdet_does(det_ckpt, scene, tmp_path):
    """A StreamingMaskRCNN config: every detection (score threshold 0) as
    COCO results with RLE masks, equal to mmdet's own whole-image
    ``inference_detector`` on the unresized image."""
    import torch
    from mmdet.apis import inference_detector, init_detector
    from pycocotools import mask as mask_util

    from tests.tiny_seg_training import REPO
    opts = ['model.test_cfg.rcnn.score_thr=0']
    proc = infer_large(DET_DEMO, det_ckpt, scene, '--out-dir', tmp_path, '--overlay-side', 200,
                       '--band-rows', 16, '--max-dets', 70, '--cfg-options', *opts)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert DET_KEYS <= row.keys()
    assert (row['height'], row['width']) == SCENE_HW and row['num_instances'] == 70
    assert row['instances'] == str(tmp_path / 'scene_instances.json')
    out = json.loads(Path(row['instances']).read_text())
    assert (out['height'], out['width']) == SCENE_HW and out['classes'][0] == 'circle'
    found = out['instances']
    assert len(found) == 70 and {'bbox', 'score', 'category_id', 'category',
                                 'segmentation'} <= found[0].keys()
    assert cv2.imread(row['overlay']).shape == (132, 200, 3)
    assert re.search(r'(\d+)/\1, ', proc.stderr), proc.stderr[-2000:]  # the bar, finished

    model = init_detector(str(REPO / DET_DEMO), str(det_ckpt), device='cpu',
                          cfg_options={'model.test_cfg.rcnn.score_thr': 0,
                                       'model.test_cfg.rcnn.max_per_img': 70})
    for t in model.cfg.test_dataloader.dataset.pipeline:
        if t['type'] == 'Resize':  # the image at its own size, scale factor 1
            t.update(scale=SCENE_HW[::-1], keep_ratio=False)
    model.cfg.test_pipeline = model.cfg.test_dataloader.dataset.pipeline
    with torch.no_grad():
        want = inference_detector(model, str(scene)).pred_instances
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d['bbox'] for d in found)]
    np.testing.assert_allclose(xyxy, want.bboxes.numpy(), rtol=1e-4, atol=0.02)  # rounded
    assert [d['category_id'] for d in found] == want.labels.tolist()
    masks = np.stack([mask_util.decode(d['segmentation']) for d in found]).astype(bool)
    assert masks.shape == (70,) + SCENE_HW
    assert (masks == want.masks.numpy()).mean() >= 0.999
