"""ufo_mm.apis.file_segmentation: an image file segmented into a label file
and an overlay, the image read and the labels written band by band: the
labels of the image in memory, a GeoTIFF's georeference copied, token tensors
spilled to disk under a budget, and errors that leave nothing behind."""
import errno
import os

import cv2
import numpy as np
import pytest
import tifffile

from tests.streaming.test_segmentation import SEM_FPN, UPERNET, build, small_cfg
from ufo_mm.apis.file_segmentation import default_labels_format, segment_raster
from ufo_mm.visualization.overlays import default_palette, write_overlay
from ufo_mm.io.rasters import RasterError, open_raster
from ufo_mm.streaming.predict import segment_large

HW = (229, 301)
BANDS = dict(band_rows=13, tokens_per_band=40)
SIDE = 100  # overlay: 76 x 100


@pytest.fixture(scope='module')
def model():
    cfg = small_cfg(UPERNET, num_classes=7)
    cfg.model.data_preprocessor.test_cfg = dict(size_divisor=32)  # pads, crops back
    return build(cfg).eval()


@pytest.fixture(scope='module')
def rgb():
    noise = np.random.default_rng(7).integers(0, 256, HW + (3,), np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 2)


@pytest.fixture(scope='module')
def ref(model, rgb):
    """segment_large on the image in memory (BGR), as infer_large did."""
    return segment_large(model, np.ascontiguousarray(rgb[..., ::-1]), **BANDS)


def geotiff(path, rgb):
    rasterio = pytest.importorskip('rasterio')
    from affine import Affine
    with rasterio.open(path, 'w', driver='GTiff', height=HW[0], width=HW[1], count=3,
                       dtype='uint8', crs='EPSG:32633', tiled=True, blockxsize=64,
                       blockysize=64, compress='deflate',
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4600000)) as ds:
        ds.write(np.moveaxis(rgb, -1, 0))
    return path


def run(model, raster, out, **kw):
    return segment_raster(model, raster, out / f'scene_labels.{kw.pop("fmt", "tif")}',
                          out / 'scene_overlay.png', overlay_side=SIDE, **BANDS, **kw)


def test_a_geotiff_gives_a_geotiff_of_labels_where_the_scene_lies(model, rgb, ref, tmp_path):
    rasterio = pytest.importorskip('rasterio')
    scene = geotiff(tmp_path / 'scene.tif', rgb)
    out = tmp_path / 'out'
    with open_raster(scene) as src:
        assert default_labels_format(src) == 'tif'
        row = run(model, src, out)
    assert row['labels'] == str(out / 'scene_labels.tif') and row['token_place'] == 'compute'
    assert row['labels_dtype'] == 'uint8' and row['num_classes'] == 7
    with rasterio.open(scene) as ds_in, rasterio.open(row['labels']) as ds:
        assert ds.crs == ds_in.crs and ds.crs.to_epsg() == 32633
        assert ds.transform == ds_in.transform
        assert ds.profile['tiled'] and ds.compression.name == 'deflate'
        assert np.array_equal(ds.read(1), ref)
    # the overlay: write_overlay's picture of the whole image and labels
    assert not getattr(model, 'dataset_meta', None)  # so the palette is the default one
    write_overlay(tmp_path / 'want.png', rgb, ref, default_palette(7), max_side=SIDE)
    assert np.array_equal(cv2.imread(row['overlay']), cv2.imread(str(tmp_path / 'want.png')))
    assert sorted(os.listdir(out)) == ['scene_labels.tif', 'scene_overlay.png']  # no scratch


@pytest.mark.parametrize('fmt', ['png', 'tif'])
def test_tokens_on_disk_give_the_same_label_files(model, rgb, ref, tmp_path, fmt):
    scene = tmp_path / 'scene.tif'
    tifffile.imwrite(scene, rgb, photometric='rgb', tile=(32, 32), compression='zlib')
    out, scratch = tmp_path / 'out', tmp_path / 'scratch'
    with open_raster(scene) as src:
        row = run(model, src, out, fmt=fmt, token_device='disk', scratch_dir=scratch)
    assert row['token_place'] == 'disk'
    labels = cv2.imread(row['labels'], cv2.IMREAD_UNCHANGED) if fmt == 'png' else \
        tifffile.imread(row['labels'])
    assert np.array_equal(labels, ref)
    assert os.listdir(scratch) == []  # its temporary folder removed


def test_a_pyramid_level(model, rgb, tmp_path):
    """--level: the level's pixels, labelled as that image in memory would be."""
    scene = tmp_path / 'slide.tif'
    small = cv2.resize(rgb, (HW[1] // 2, HW[0] // 2), interpolation=cv2.INTER_AREA)
    with tifffile.TiffWriter(scene) as tif:
        tif.write(rgb, photometric='rgb', tile=(64, 64), subifds=1)
        tif.write(small, photometric='rgb', tile=(64, 64), subfiletype=1)
    with open_raster(scene, level=1) as src:
        assert (src.height, src.width) == small.shape[:2]
        row = run(model, src, tmp_path / 'out')
    want = segment_large(model, np.ascontiguousarray(small[..., ::-1]), **BANDS)
    assert np.array_equal(tifffile.imread(row['labels']), want)


def test_16_bit_labels_past_255_classes(rgb, tmp_path):
    model = build(small_cfg(SEM_FPN, num_classes=300)).eval()
    scene = tmp_path / 'scene.tif'
    tifffile.imwrite(scene, rgb, photometric='rgb', rowsperstrip=16)
    with open_raster(scene) as src:
        row = run(model, src, tmp_path / 'out')
    labels = tifffile.imread(row['labels'])
    assert row['labels_dtype'] == 'uint16' and labels.dtype == np.uint16
    assert np.array_equal(labels, segment_large(model, np.ascontiguousarray(rgb[..., ::-1]),
                                                **BANDS))


def test_errors_leave_nothing_under_the_final_names(model, rgb, tmp_path, monkeypatch):
    """A budget below one band, a full scratch disk, a tile that cannot be
    decoded halfway: a clear error each, and no label file, partial file or
    scratch folder left."""
    from ufo_mm.streaming import tokens
    from ufo_mm.streaming.tokens import MemoryBudgetError, ScratchDiskFull
    scene = tmp_path / 'scene.tif'
    tifffile.imwrite(scene, rgb, photometric='rgb', tile=(32, 32), compression='zlib')
    out = tmp_path / 'out'

    with open_raster(scene) as src, pytest.raises(MemoryBudgetError,
                                                  match=r'too small for one band.*at least'):
        run(model, src, out, max_ram_gb=0.01)
    assert sorted(os.listdir(out)) == []

    def no_space(*args):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(tokens.os, 'posix_fallocate', no_space)
    with open_raster(scene) as src, pytest.raises(ScratchDiskFull, match='scratch disk is full'):
        run(model, src, out, token_device='disk')
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == []

    with open_raster(scene) as src:
        read = src.read_rows

        def fails_halfway(a, b, **kw):
            if b > HW[0] // 2:
                raise RasterError(f'cannot read rows {a} to {b} of {scene}: corrupt tile')
            return read(a, b, **kw)
        src.read_rows = fails_halfway
        for fmt in ('tif', 'png'):
            with pytest.raises(RasterError, match='corrupt tile'):
                run(model, src, out, fmt=fmt, token_device='disk')
    assert sorted(os.listdir(out)) == []
