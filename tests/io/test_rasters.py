"""ufo_mm.io.rasters: images read band by band equal whole reads, label maps
written band by band (georeferenced, tiled, 8 or 16 bits), and clear errors
that leave no file behind."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from ufo_mm.io.images import ImageReadError, read_image
from ufo_mm.io import rasters
from ufo_mm.io.rasters import (LabelWriter, RasterError, RasterWriteError, TiffRaster,
                               open_raster)

H, W = 301, 203  # not multiples of the 64-px tiles


@pytest.fixture(scope='module')
def rgb():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def bands(src, step, channel_order='bgr'):
    return np.concatenate([src.read_rows(a, min(src.height, a + step), channel_order)
                           for a in range(0, src.height, step)])


def make_geotiff(path, image, crs='EPSG:32633', point=False, overviews=()):
    rasterio = pytest.importorskip('rasterio')
    from affine import Affine
    with rasterio.open(path, 'w', driver='GTiff', height=image.shape[0], width=image.shape[1],
                       count=3, dtype='uint8', crs=crs, tiled=True, blockxsize=64,
                       blockysize=64, transform=Affine(10, 0, 500000.5, 0, -20, 4600000.25)) as ds:
        if point:
            ds.update_tags(AREA_OR_POINT='Point')
        ds.write(np.moveaxis(image, -1, 0))
    if overviews:
        from rasterio.enums import Resampling
        with rasterio.open(path, 'r+') as ds:
            ds.build_overviews(list(overviews), Resampling.nearest)
    return path


# ---------------------------------------------------------------- reading

@pytest.mark.parametrize('layout', [
    dict(tile=(64, 64), compression='zlib'),
    dict(rowsperstrip=16, compression='lzw'),
    dict(rowsperstrip=50, compression='zlib', planarconfig='separate'),
    dict(tile=(32, 48), planarconfig='separate'),
    dict(),  # uncompressed, one strip: memory-mapped
])
@pytest.mark.parametrize('step', [1, 37, 150, H])
def test_tiff_read_band_by_band_equals_whole_read(tmp_path, rgb, layout, step):
    path = tmp_path / 'image.tif'
    data = np.moveaxis(rgb, -1, 0) if layout.get('planarconfig') == 'separate' else rgb
    tifffile.imwrite(path, data, photometric='rgb', **layout)
    with open_raster(path) as src:
        assert isinstance(src, TiffRaster) and not src.decoded_whole
        assert (src.height, src.width, src.channels, src.dtype) == (H, W, 3, np.uint8)
        assert src.levels == ((H, W),) and src.profile is None
        assert (src._memmap is not None) == (not layout)
        assert np.array_equal(bands(src, step), tifffile.imread(path)[..., ::-1]
                              if 'planarconfig' not in layout else rgb[..., ::-1])
        band = src.read_rows(100, 110, 'rgb')
        assert band.flags.c_contiguous and np.array_equal(band, rgb[100:110])


@pytest.mark.parametrize('kind', ['grey16', 'grey_alpha', 'rgba', 'palette', 'bilevel',
                                  'jpeg'])
def test_pixel_kinds_convert_as_read_image(tmp_path, rgb, kind):
    rng = np.random.default_rng(1)
    path = tmp_path / f'{kind}.tif'
    if kind == 'grey16':
        tifffile.imwrite(path, rng.integers(0, 65536, (H, W), dtype=np.uint16), tile=(64, 64))
    elif kind == 'grey_alpha':
        tifffile.imwrite(path, rgb[..., :2], photometric='minisblack', extrasamples=[2],
                         rowsperstrip=10)
    elif kind == 'rgba':
        tifffile.imwrite(path, np.dstack([rgb, rgb[..., :1]]), photometric='rgb',
                         tile=(64, 64), compression='zlib')
    elif kind == 'palette':
        cmap = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
        tifffile.imwrite(path, rgb[..., 0], photometric='palette', colormap=cmap,
                         tile=(64, 64))
    elif kind == 'bilevel':  # tifffile writes bool as MINISWHITE
        tifffile.imwrite(path, rgb[..., 0] > 128, rowsperstrip=24, compression='zlib')
    else:
        tifffile.imwrite(path, rgb, photometric='rgb', tile=(64, 64), compression='jpeg')
    with open_raster(path) as src:
        assert np.array_equal(bands(src, 29), read_image(path, 'bgr'))
        assert np.array_equal(bands(src, 64, 'rgb'), read_image(path, 'rgb'))


def test_reads_only_the_tiles_of_the_rows_asked_for(tmp_path, rgb, monkeypatch):
    path = tmp_path / 'tiled.tif'
    tifffile.imwrite(path, rgb, photometric='rgb', tile=(64, 64), compression='zlib')
    with open_raster(path) as src:
        real, read = tifffile.FileHandle.read_segments, []

        def spy(self, offsets, bytecounts, indices=None, **kwargs):
            read.extend(indices)
            return real(self, offsets, bytecounts, indices=indices, **kwargs)

        monkeypatch.setattr(tifffile.FileHandle, 'read_segments', spy)
        tiles_wide = -(-W // 64)  # 4
        src.read_rows(70, 80)
        assert read == list(range(tiles_wide, 2 * tiles_wide))  # the second row of tiles
        src.read_rows(80, 128)  # the same row of tiles: kept, not read again
        assert len(read) == tiles_wide
        src.read_rows(120, 260)  # rows 2 to 4 of tiles
        assert read[tiles_wide:] == list(range(2 * tiles_wide, 5 * tiles_wide))


def test_pyramid_levels(tmp_path, rgb):
    sub = tmp_path / 'subifds.tif'
    with tifffile.TiffWriter(sub) as tif:
        tif.write(rgb, subifds=2, tile=(64, 64), photometric='rgb', compression='zlib')
        for f in (2, 4):
            tif.write(rgb[::f, ::f], subfiletype=1, tile=(64, 64), photometric='rgb',
                      compression='zlib')
    svs = tmp_path / 'slide.svs'  # Aperio's layout: baseline, thumbnail, then the levels
    aperio = 'Aperio Image Library v12.0.5\r\n'
    with tifffile.TiffWriter(svs) as tif:
        tif.write(rgb, tile=(64, 64), photometric='rgb', compression='jpeg',
                  description=aperio + f'{W}x{H} (64x64) JPEG/RGB|AppMag = 20', metadata=None)
        tif.write(rgb[::8, ::8], photometric='rgb', description=aperio + 'thumb',
                  metadata=None)
        for f in (2, 4):
            tif.write(rgb[::f, ::f], tile=(64, 64), photometric='rgb', compression='jpeg',
                      description=aperio + 'level', metadata=None)
    for path in (sub, svs):
        sizes = ((H, W), (151, 102), (76, 51))
        for level in (None, 0, 1, 2):
            with open_raster(path, level=level) as src:
                assert src.levels == sizes and src.level == (level or 0)
                assert (src.height, src.width) == sizes[level or 0]
                assert np.array_equal(bands(src, 40),
                                      tifffile.imread(path, level=level or 0)[..., ::-1])
        with pytest.raises(RasterError, match=f'{path.name}: no pyramid level 3; its 3 '
                                              f'level.s. are {W} x {H}, 102 x 151, 51 x 76'):
            open_raster(path, level=3)


def test_png_and_jpeg_are_decoded_whole(tmp_path, rgb):
    from PIL import Image
    for name in ('image.png', 'image.jpg'):
        path = tmp_path / name
        Image.fromarray(rgb).save(path)
        with open_raster(path) as src:
            assert src.decoded_whole and src.profile is None and src.levels == ((H, W),)
            assert np.array_equal(bands(src, 50), read_image(path, 'bgr'))
            assert np.array_equal(src.read_rows(3, 9, 'rgb'), read_image(path)[3:9])
        with pytest.raises(RasterError, match='not a TIFF, so no pyramid level 1'):
            open_raster(path, level=1)


@pytest.mark.parametrize('order', ['bgr', 'rgb'])
def test_whole_image_for_detection(tmp_path, rgb, order):
    """read_whole: a TIFF's rows all at once; a decoded PNG hands over its own
    array (converted in place: no second image) and is closed."""
    from PIL import Image
    png, tif = tmp_path / 'image.png', tmp_path / 'image.tif'
    Image.fromarray(rgb).save(png)
    tifffile.imwrite(tif, rgb, photometric='rgb', tile=(64, 64))
    want = rgb[..., ::-1] if order == 'bgr' else rgb
    with open_raster(tif) as src:
        assert np.array_equal(src.read_whole(order), want)
    src = open_raster(png)
    own = src._image
    whole = src.read_whole(order)
    assert whole is own and np.array_equal(whole, want)
    with pytest.raises(ValueError, match='closed'):
        src.read_whole(order)


@pytest.mark.parametrize('point', [False, True])
def test_geotiff_profile_equals_gdal(tmp_path, rgb, point):
    rasterio = pytest.importorskip('rasterio')
    path = make_geotiff(tmp_path / 'scene.tif', rgb, point=point, overviews=(2, 4))
    with rasterio.open(path) as ds:
        crs, transform = ds.crs, ds.transform
        assert ds.tags()['AREA_OR_POINT'] == ('Point' if point else 'Area')
    with rasterio.open(path, overview_level=0) as ds:
        level1 = ds.transform
    with open_raster(path) as src:
        assert src.profile['crs'] == 'EPSG:32633' == crs.to_string()
        assert src.profile['transform'] == pytest.approx(tuple(transform)[:6])
        assert src.levels == ((H, W), (151, 102), (76, 51))
        assert np.array_equal(bands(src, 100, 'rgb'), rgb)
    with open_raster(path, level=1) as src:
        assert src.profile['transform'] == pytest.approx(tuple(level1)[:6])


# ---------------------------------------------------------------- writing

def write(path, labels, step, **kwargs):
    with LabelWriter(path, *labels.shape, **kwargs) as out:
        for a in range(0, labels.shape[0], step):
            out.write_rows(a, labels[a:a + step])
    return path


@pytest.mark.parametrize('point', [False, True])
def test_georeferenced_labels_lie_where_the_scene_lies(tmp_path, rgb, point):
    rasterio = pytest.importorskip('rasterio')
    scene = make_geotiff(tmp_path / 'scene.tif', rgb, point=point)
    labels = np.random.default_rng(2).integers(0, 150, (H, W))  # int64, as argmax gives
    with open_raster(scene) as src:
        out = write(tmp_path / 'labels.tif', labels, 23, profile=src.profile, tile=64)
    assert sorted(os.listdir(tmp_path)) == ['labels.tif', 'scene.tif']
    with rasterio.open(scene) as ds_in, rasterio.open(out) as ds:
        assert ds.crs == ds_in.crs and ds.transform == ds_in.transform
        assert ds.tags().get('AREA_OR_POINT') == ds_in.tags().get('AREA_OR_POINT')
        assert ds.profile['tiled'] and ds.block_shapes == [(64, 64)]
        assert ds.compression.name == 'deflate' and ds.count == 1 and ds.dtypes == ('uint8',)
        assert np.array_equal(ds.read(1), labels)


def test_labels_of_a_pyramid_level_lie_where_it_lies(tmp_path, rgb):
    rasterio = pytest.importorskip('rasterio')
    scene = make_geotiff(tmp_path / 'scene.tif', rgb, overviews=(2,))
    with open_raster(scene, level=1) as src:
        labels = np.ones((src.height, src.width), np.uint8)
        out = write(tmp_path / 'labels.tif', labels, 64, profile=src.profile)
    with rasterio.open(scene, overview_level=0) as ds_in, rasterio.open(out) as ds:
        assert ds.crs == ds_in.crs and ds.transform.almost_equals(ds_in.transform)


def test_crs_and_transform_without_geotiff_tags(tmp_path):
    rasterio = pytest.importorskip('rasterio')
    from affine import Affine
    transform = Affine(0.001, 0, 10.0, 0, -0.002, 50.0)
    labels = np.arange(H * W).reshape(H, W) % 7
    out = write(tmp_path / 'labels.tif', labels, 100, tile=32,
                profile=dict(crs='EPSG:4326', transform=transform))
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 4326 and ds.transform.almost_equals(transform)
        assert ds.block_shapes == [(32, 32)] and np.array_equal(ds.read(1), labels)


def test_uint16_labels_bigtiff_and_any_band_heights(tmp_path, monkeypatch):
    labels = np.random.default_rng(3).integers(0, 3000, (H, W)).astype(np.uint16)
    path = tmp_path / 'labels.tif'
    heights = [1, 7, 64, 200, 29]  # crossing tile rows, smaller and larger than a tile
    assert not LabelWriter(path, 60000, 60000).bigtiff  # 3.6 GB
    assert LabelWriter(path, 60000, 60000, np.uint16).bigtiff  # 7.2 GB
    monkeypatch.setattr(rasters, 'BIGTIFF_BYTES', H * W)  # auto: over 4 GB, here smaller
    with LabelWriter(path, H, W, dtype=np.uint16, tile=64, compression='lzw') as out:
        a = 0
        for h in heights:
            out.write_rows(a, labels[a:a + h])
            a += h
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == (64, 64)
        assert page.dtype == np.uint16 and page.compression == 5  # LZW
        assert np.array_equal(page.asarray(), labels)


def test_cog(tmp_path, rgb):
    rasterio = pytest.importorskip('rasterio')
    scene = make_geotiff(tmp_path / 'scene.tif', rgb)
    labels = (np.arange(H)[:, None] // 10 + np.arange(W)[None] // 10) % 5
    with open_raster(scene) as src:
        out = write(tmp_path / 'labels.tif', labels, 50, profile=src.profile, tile=64, cog=True)
    assert sorted(os.listdir(tmp_path)) == ['labels.tif', 'scene.tif']
    with rasterio.open(scene) as ds_in, rasterio.open(out) as ds:
        assert ds.tags(ns='IMAGE_STRUCTURE').get('LAYOUT') == 'COG'
        assert ds.overviews(1) and ds.block_shapes == [(64, 64)]
        assert ds.crs == ds_in.crs and ds.transform == ds_in.transform
        assert np.array_equal(ds.read(1), labels)


def test_rasterio_missing_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'rasterio', None)
    with pytest.raises(ImportError, match=r'cog=True needs rasterio .*pip install rasterio'):
        LabelWriter(tmp_path / 'labels.tif', H, W, cog=True)
    with pytest.raises(ImportError, match='pip install rasterio'):
        LabelWriter(tmp_path / 'labels.tif', H, W, profile=dict(crs='EPSG:4326'))


# ---------------------------------------------------------------- errors

def test_unreadable_inputs_raise_naming_the_file(tmp_path, rgb):
    cases = {}
    path = tmp_path / 'truncated_data.tif'
    tifffile.imwrite(path, rgb, photometric='rgb', tile=(64, 64), compression='zlib')
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    cases[path] = 'truncated: its pixels end at byte'
    path = tmp_path / 'truncated_header.tif'
    path.write_bytes((tmp_path / 'truncated_data.tif').read_bytes()[:12])
    cases[path] = 'cannot read TIFF'
    path = tmp_path / 'codec.tif'  # a compression imagecodecs does not know
    tifffile.imwrite(path, rgb, photometric='rgb', tile=(64, 64))
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags['Compression'].valueoffset
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write((60000).to_bytes(2, 'little'))
    cases[path] = 'cannot decode its pixels .compression 60000.*imagecodecs may lack'
    path = tmp_path / 'float.tif'
    tifffile.imwrite(path, rgb.astype(np.float32), photometric='rgb')
    cases[path] = 'RGB TIFF of 3 float32 sample.s. per pixel .sample format 3'
    path = tmp_path / 'five.tif'
    tifffile.imwrite(path, np.dstack([rgb, rgb[..., :2]]), photometric='minisblack',
                     planarconfig='contig')
    cases[path] = 'MINISBLACK TIFF of 5 uint8'
    path = tmp_path / 'empty.tif'
    path.write_bytes(b'')
    cases[path] = 'empty file'
    for path, message in cases.items():
        with pytest.raises(RasterError, match=f'{path.name}.*{message}|{message}.*{path.name}'):
            open_raster(path)
    assert issubclass(RasterError, ImageReadError)
    with pytest.raises(FileNotFoundError):
        open_raster(tmp_path / 'missing.tif')


def test_decoding_errors_in_a_band_name_the_file(tmp_path, rgb):
    path = tmp_path / 'corrupt.tif'
    tifffile.imwrite(path, rgb, photometric='rgb', tile=(64, 64), compression='zlib')
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[5]
    data = bytearray(path.read_bytes())
    data[offset:offset + 16] = b'\xff' * 16  # not zlib
    path.write_bytes(bytes(data))
    with open_raster(path) as src:
        src.read_rows(0, 64)
        with pytest.raises(RasterError, match='cannot read rows 64 to 70 of .*corrupt.tif'):
            src.read_rows(64, 70)
        with pytest.raises(ValueError, match='rows 300 to 302 are not within the 301 rows'):
            src.read_rows(300, 302)


def test_disk_full_removes_the_partial_file(tmp_path, monkeypatch):
    real, calls = tifffile.FileHandle.write, []

    def full_disk(self, data):
        calls.append(len(data))
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(self, data)

    monkeypatch.setattr(tifffile.FileHandle, 'write', full_disk)
    path = tmp_path / 'labels.tif'
    with pytest.raises(RasterWriteError, match='the disk is full .*labels.tif.*partial file '
                                               'labels.tif.part was removed') as info:
        write(path, np.zeros((H, W), np.uint8), 16, tile=16)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert os.listdir(tmp_path) == []


def test_errors_while_writing_leave_nothing(tmp_path):
    path = tmp_path / 'labels.tif'
    labels = np.zeros((H, W), np.int64)
    with pytest.raises(KeyError):  # the caller's error inside the with block
        with LabelWriter(path, H, W, tile=64) as out:
            out.write_rows(0, labels[:100])
            assert (tmp_path / 'labels.tif.part').exists()
            raise KeyError('model failed')
    with pytest.raises(ValueError, match='only 100 of 301 rows were written'):
        with LabelWriter(path, H, W, tile=64) as out:
            out.write_rows(0, labels[:100])
    with pytest.raises(ValueError, match='row 50 given, 100 expected'):
        with LabelWriter(path, H, W) as out:
            out.write_rows(0, labels[:100])
            out.write_rows(50, labels[50:60])
    labels[7, 9] = 256
    with pytest.raises(ValueError, match='labels from 0 to 256 do not fit uint8'):
        write(path, labels, 64)
    with pytest.raises(ValueError, match=r'labels must be \(h, 203\) integers'):
        write(path, labels.astype(np.float32), 64)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='uint8 or uint16'):
        LabelWriter(path, H, W, dtype=np.int32)


def test_rasters_need_no_torch():
    """The module (and read_image's module, which it uses) import without
    torch and mmengine: ``ufo_mm/__init__.py`` (which registers the models) is
    bypassed here to show it."""
    root = Path(__file__).resolve().parents[2]
    code = ('import sys, types; package = types.ModuleType("ufo_mm"); '
            f'package.__path__ = [{str(root / "ufo_mm")!r}]; sys.modules["ufo_mm"] = package; '
            'import ufo_mm.io.rasters; '
            'assert not {"torch", "mmengine", "mmseg", "cv2"} & set(sys.modules), sys.modules')
    subprocess.run([sys.executable, '-c', code], check=True)
