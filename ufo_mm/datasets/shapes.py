"""Shape, colour and texture drawing shared by the synthetic COCO and ADE20K datasets.

Every function takes a ``numpy.random.Generator`` so that a dataset is a pure
function of its seed.  Images are ``(H, W, 3)`` uint8 RGB arrays and masks are
``(H, W)`` bool arrays.  Classes differ by *shape* (or *texture*) only: colours
are drawn at random for every object, so colour carries no class information.
"""
from pathlib import Path

import cv2
import numpy as np

SHAPES = ('circle', 'triangle', 'square', 'star', 'cross')
TEXTURES = ('stripes', 'checker', 'dots', 'noise')

MIN_SIDE = 32
# An earlier shape keeps at least this fraction of its area visible, in one
# piece and without holes, when later shapes are drawn over it.
MIN_VISIBLE_FRACTION = 2 / 3
PLACEMENT_ATTEMPTS = 20


def image_size(img_size):
    """Return ``(H, W)`` from an int (square) or an ``(H, W)`` pair."""
    if np.isscalar(img_size):
        img_size = (img_size, img_size)
    h, w = (int(s) for s in img_size)
    if min(h, w) < MIN_SIDE:
        raise ValueError(f'img_size must be at least {MIN_SIDE} on each side, got {(h, w)}')
    return h, w


def image_rng(seed, index):
    """Generator for image ``index`` of a split: image i does not depend on how many are made."""
    return np.random.default_rng([int(seed), int(index)])


def shape_vertices(kind, radius, angle=0.0, aspect=1.0):
    """Polygon of a shape centred on the origin, ``(N, 2)`` float ``(x, y)``.

    ``radius`` is the circumradius before ``aspect`` stretches x by
    ``sqrt(aspect)`` and y by ``1 / sqrt(aspect)``; ``angle`` rotates (radians).
    """
    if kind == 'circle':
        theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(theta), np.sin(theta)], 1)
    elif kind in ('triangle', 'square'):
        # square corners sit on the diagonals so that ``aspect`` makes a rectangle
        n, start = (3, 0.0) if kind == 'triangle' else (4, 0.5)
        theta = (np.arange(n) + start) * 2 * np.pi / n
        pts = np.stack([np.cos(theta), np.sin(theta)], 1)
    elif kind == 'star':
        theta = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    elif kind == 'cross':
        a = 0.33  # arm half-width relative to the arm length
        quarter = np.array([[a, 1], [a, a], [1, a]])
        pts = np.concatenate([_rotate(quarter, -k * np.pi / 2) for k in range(4)])
    else:
        raise ValueError(f'unknown shape {kind!r}; valid shapes are {SHAPES}')
    pts = radius * pts * np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    return _rotate(pts, angle)


def _rotate(pts, angle):
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def polygon_mask(vertices, size_hw):
    """Rasterise an ``(N, 2)`` polygon into an ``(H, W)`` bool mask (sub-pixel vertices)."""
    mask = np.zeros(size_hw, np.uint8)
    cv2.fillPoly(mask, [np.round(vertices * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def random_shape_mask(rng, kind, size_hw, size_range):
    """Mask of one randomly rotated, scaled and placed shape lying fully inside the image.

    ``size_range`` bounds the circumscribed diameter as a fraction of the short side.
    """
    h, w = size_hw
    radius = rng.uniform(*size_range) * min(h, w) / 2
    pts = shape_vertices(kind, radius, rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.25))
    lo, hi = pts.min(0), pts.max(0)
    centre = rng.uniform(-lo, np.maximum(np.array([w, h]) - hi, -lo + 1e-3))
    return polygon_mask(pts + centre, size_hw)


def is_one_piece(mask):
    """True when ``mask`` is a single 8-connected region without holes."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return len(contours) == 1


def place_shapes(rng, size_hw, num_shapes, size_range):
    """Drop up to ``num_shapes`` random shapes, later ones on top, with limited occlusion.

    A new shape is redrawn (up to ``PLACEMENT_ATTEMPTS`` times, then skipped) if it
    would hide more than ``1 - MIN_VISIBLE_FRACTION`` of an earlier shape, split
    it or punch a hole in it.  Returns ``[(class_index, full_mask, visible_mask)]``
    in drawing order; ``class_index`` indexes ``SHAPES``.
    """
    placed = []
    for _ in range(num_shapes):
        for _ in range(PLACEMENT_ATTEMPTS):
            label = int(rng.integers(len(SHAPES)))
            mask = random_shape_mask(rng, SHAPES[label], size_hw, size_range)
            hidden = [visible & ~mask for _, _, visible in placed]
            if mask.any() and all(
                    not (visible & mask).any()
                    or (new.sum() >= MIN_VISIBLE_FRACTION * full.sum() and is_one_piece(new))
                    for (_, full, visible), new in zip(placed, hidden)):
                placed = [(c, full, new) for (c, full, _), new in zip(placed, hidden)]
                placed.append((label, mask, mask.copy()))
                break
    return placed


def random_colour(rng, avoid=(), min_distance=100.0, attempts=64):
    """RGB colour at least ``min_distance`` (Euclidean) from every colour in ``avoid``.

    Falls back to the most distant of ``attempts`` candidates when none qualifies.
    """
    candidates = rng.integers(0, 256, (attempts, 3))
    if len(avoid) == 0:
        return candidates[0].astype(np.uint8)
    dist = np.linalg.norm(candidates[:, None] - np.asarray(avoid, float)[None], axis=2).min(1)
    ok = np.flatnonzero(dist >= min_distance)
    return candidates[ok[0] if len(ok) else dist.argmax()].astype(np.uint8)


def paint_shapes(rng, img, shapes, min_distance=100.0):
    """Fill each full shape mask in order with a flat colour that contrasts with what it covers."""
    for _, mask, _ in shapes:
        under = img[mask]
        sample = under[rng.integers(0, len(under), 32)]
        img[mask] = random_colour(rng, sample, min_distance)
    return img


def texture(rng, kind, size_hw, colours):
    """``(H, W, 3)`` uint8 two-colour texture with random orientation and scale (in pixels)."""
    h, w = size_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    if kind == 'stripes':
        period = rng.uniform(6, 14)
        pattern = (u % period) < period / 2
    elif kind == 'checker':
        cell = rng.uniform(5, 12)
        pattern = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
    elif kind == 'dots':
        spacing = rng.uniform(8, 14)
        r = spacing * rng.uniform(0.2, 0.3)
        pattern = ((u % spacing) - spacing / 2) ** 2 + ((v % spacing) - spacing / 2) ** 2 < r * r
    elif kind == 'noise':
        cell = int(rng.integers(1, 3))
        blocks = rng.random((h // cell + 1, w // cell + 1)) < 0.5
        pattern = blocks.repeat(cell, 0).repeat(cell, 1)[:h, :w]
    else:
        raise ValueError(f'unknown texture {kind!r}; valid textures are {TEXTURES}')
    a, b = (np.asarray(c, np.uint8) for c in colours)
    return np.where(pattern[..., None], a, b)


def gradient(rng, size_hw, colours):
    """``(H, W, 3)`` uint8 linear blend between two colours along a random direction."""
    h, w = size_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(theta) + yy * np.sin(theta)
    t = ((t - t.min()) / max(np.ptp(t), 1e-6))[..., None]
    a, b = (np.asarray(c, np.float32) for c in colours)
    return np.round(a * (1 - t) + b * t).astype(np.uint8)


def clutter_background(rng, size_hw):
    """Low-contrast random texture or gradient: busy, but far weaker than object edges."""
    base = rng.integers(0, 256, 3)
    colours = (base, np.clip(base + rng.uniform(-40, 40, 3), 0, 255))
    kind = rng.integers(len(TEXTURES) + 1)
    if kind == len(TEXTURES):
        return gradient(rng, size_hw, colours)
    return texture(rng, TEXTURES[kind], size_hw, colours)


def add_noise(rng, img, max_sigma=8.0):
    """Add Gaussian pixel noise of a random strength up to ``max_sigma``."""
    noise = rng.normal(0, rng.uniform(0, max_sigma), img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def write_image(path, img):
    """Write an RGB ``(H, W, 3)`` image (``.jpg`` / ``.JPEG`` at quality 95) or an
    ``(H, W)`` label map."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(img[..., ::-1] if img.ndim == 3 else img)
    jpeg = path.suffix.lower() in ('.jpg', '.jpeg')
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else []
    if not cv2.imwrite(str(path), data, params):
        raise OSError(f'could not write {path}')
