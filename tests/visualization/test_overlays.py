"""ufo_mm.visualization.overlays: label colours, the overlay's size and
colours, the image shrunk band by band (only bands of a large image copied)."""

import cv2
import numpy as np
import pytest

from tests.models.memory_tracker import traced_peak
from ufo_mm.visualization import overlays
from ufo_mm.visualization.overlays import (IGNORE_COLOUR, colour_labels, overlay_size,
                                           shrink_image, shrink_labels, write_overlay)

PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


@pytest.fixture(scope='module')
def smooth():
    """(301, 457, 3) uint8 RGB gradients (JPEG keeps them within a few levels)."""
    y, x = np.mgrid[0:301, 0:457]
    return np.stack([x * 255 // 456, y * 255 // 300, (x + y) % 256], -1).astype(np.uint8)


def test_colour_labels_maps_palette_and_blacks_out_ignored():
    label = np.array([[0, 1], [2, 255]])
    out = colour_labels(label, PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == PALETTE[0] and out[1, 0].tolist() == PALETTE[2]
    assert out[1, 1].tolist() == list(IGNORE_COLOUR)
    # a label the palette does not cover is not given a neighbour's colour
    assert colour_labels(np.array([[7]]), PALETTE)[0, 0].tolist() == list(IGNORE_COLOUR)


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
    monkeypatch.setattr(overlays, 'SHRINK_BAND_BYTES', 3 * 600 * 4 * 7)  # 7 output rows a band
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
    monkeypatch.setattr(overlays, 'SHRINK_BAND_BYTES', 1 << 16)
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
    monkeypatch.setattr(overlays, 'SHRINK_BAND_BYTES', 1 << 16)
    view = image[..., ::-1]  # the tool passes the RGB view of its BGR array
    _, peak = traced_peak(lambda: write_overlay(tmp_path / 'o.jpg', view, labels, [[1, 2, 3]],
                                                max_side=64))
    assert peak < image.nbytes / 16, (peak, image.nbytes)  # a band of 32 rows is 1/64
