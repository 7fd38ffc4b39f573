"""Band graphs (``ufo_mm.streaming.bands``): every op computed in bands of rows
equals the op on the whole map (PyTorch's own functions as the reference), for
band heights that do not divide the map, including one row; each row of a
source is computed once however many consumers and halos ask for it; bad
graphs are refused."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ufo_mm.streaming import bands

H, W = 37, 23  # odd: no band height divides it
BAND_ROWS = (1, 4, 7, 100)


@pytest.fixture(scope='module')
def x():
    torch.manual_seed(0)
    return torch.randn(2, 6, H, W)


def source(x, counter=None):
    def rows(a, b):
        if counter is not None:
            counter.extend(range(a, b))
        return x[:, :, a:b]
    return bands.Source(rows, x.shape[-2:])


def whole(node, band_rows):
    out = []
    bands.evaluate(node, band_rows, lambda a, b, rows: out.append((a, b, rows.clone())))
    assert [a for a, _, _ in out] == list(range(0, node.height, band_rows))
    assert out[-1][1] == node.height
    return torch.cat([r for _, _, r in out], dim=2)


def close(a, b):
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('band_rows', BAND_ROWS)
@pytest.mark.parametrize('conv', [
    dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=1), dict(kernel_size=5, padding=2), dict(kernel_size=3, padding=2, dilation=2),
    dict(kernel_size=3, padding=1, groups=6), dict(kernel_size=(3, 1), padding=(1, 0)),
    dict(kernel_size=4, stride=3, padding=0)])
def test_convolution(x, conv, band_rows):
    torch.manual_seed(1)
    m = nn.Conv2d(6, 6 if conv.get('groups') else 5, **conv).eval()
    with torch.no_grad():
        close(whole(bands.Conv(m, source(x)), band_rows), m(x))


@pytest.mark.parametrize('band_rows', BAND_ROWS)
def test_transposed_convolution_and_module_chain(x, band_rows):
    torch.manual_seed(2)
    up = nn.Sequential(nn.ConvTranspose2d(6, 4, 2, stride=2), nn.BatchNorm2d(4), nn.GELU(),
                       nn.ConvTranspose2d(4, 3, 2, stride=2)).eval()
    up[1].running_mean.normal_()
    with torch.no_grad():
        close(whole(bands.module_node(up, source(x)), band_rows), up(x))


@pytest.mark.parametrize('band_rows', BAND_ROWS)
@pytest.mark.parametrize('k,s,ceil', [(2, 2, True), (2, 2, False), (1, 2, False), (4, 4, True),
                                      (3, 2, True)])
def test_max_pooling(x, k, s, ceil, band_rows):
    node = bands.module_node(nn.MaxPool2d(k, s, ceil_mode=ceil), source(x))
    close(whole(node, band_rows), F.max_pool2d(x, k, s, ceil_mode=ceil))


@pytest.mark.parametrize('band_rows', BAND_ROWS)
@pytest.mark.parametrize('kw', [
    dict(size=(50, 31), mode='bilinear', align_corners=False),  # non-integer factors
    dict(size=(74, 46), mode='bilinear', align_corners=False),  # exactly 2x
    dict(size=(148, 23), mode='bilinear', align_corners=False),  # 4x rows, same width
    dict(size=(H * 16, 23), mode='bilinear', align_corners=False),  # 16x: past the band route
    dict(size=(50, 31), mode='bilinear', align_corners=True),
    dict(size=(74, 46), mode='bilinear', align_corners=True),
    dict(size=(20, 12), mode='bilinear', align_corners=False),  # down-sampling
    dict(size=(50, 31), mode='nearest'), dict(size=(74, 46), mode='nearest'),
    dict(size=(20, 40), mode='nearest'),
    dict(scale_factor=2., mode='nearest'), dict(scale_factor=2., mode='bilinear',
                                                align_corners=False)])
def test_resize_follows_interpolate(x, kw, band_rows):
    node = bands.Resize(source(x), **kw)
    close(whole(node, band_rows), F.interpolate(x, **kw))


@pytest.mark.parametrize('s', (1, 2, 3))
def test_resizing_a_pooled_map_to_a_large_one_makes_only_the_band_asked_for(monkeypatch, s):
    """UperNet's pyramid pooling resizes 1 x 1 to 6 x 6 maps back to its
    map's size (512 x 512 at 16384 px): a band of it must not cost the whole map."""
    torch.manual_seed(5)
    pooled = torch.randn(1, 8, s, s)
    size, band = (s * 256, 300), 4
    largest = []
    interpolate = F.interpolate

    def recorded(*args, **kwargs):
        out = interpolate(*args, **kwargs)
        largest.append(out.numel())
        return out
    monkeypatch.setattr(F, 'interpolate', recorded)
    node = bands.Resize(bands.Tensor(pooled), size=size, mode='bilinear', align_corners=False)
    out = whole(node, band)
    assert max(largest) <= 8 * band * 2 * size[1]  # the rows of a band (and a halo), not all
    monkeypatch.setattr(F, 'interpolate', interpolate)
    close(out, F.interpolate(pooled, size=size, mode='bilinear', align_corners=False))


@pytest.mark.parametrize('band_rows', BAND_ROWS)
def test_crop_cat_and_convolution_of_a_concatenation(x, band_rows):
    torch.manual_seed(3)
    a, b = source(x), source(x * 2 + 1)
    conv = nn.Conv2d(12, 4, 3, padding=1)
    with torch.no_grad():
        node = bands.Conv(conv, bands.cat(a, b))
        assert node.inputs == [a, b]  # the concatenation is never formed
        close(whole(node, band_rows), conv(torch.cat([x, x * 2 + 1], 1)))
        crop = bands.Crop(bands.cat(a, b), (30, 20), top=3, left=2)
        close(whole(crop, band_rows), torch.cat([x, x * 2 + 1], 1)[:, :, 3:33, 2:22])


@pytest.mark.parametrize('band_rows', (1, 5, 64))
def test_a_graph_with_shared_nodes_and_a_global_step_computes_each_row_once(x, band_rows):
    """A UperNet-like graph: a map used by two consumers with different halos,
    a top-down resize, and a global step (Whole) on a pooled map."""
    torch.manual_seed(4)
    c1, c2 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, stride=2, padding=1)
    c3 = nn.Conv2d(12, 3, 3, padding=1)
    computed = []
    with torch.no_grad():
        src = source(x, computed)
        lat = bands.Conv(c1, src)
        low = bands.Conv(c2, lat)
        glob = bands.Whole(lambda t: t - t.mean(dim=(2, 3), keepdim=True), low, low.size)
        top = bands.add(lat, bands.Resize(glob, size=lat.size, mode='bilinear',
                                          align_corners=False))
        out = bands.Conv(c3, bands.cat(top, lat))
        got = whole(out, band_rows)
        y1 = c1(x)
        y2 = c2(y1)
        y2 = y2 - y2.mean(dim=(2, 3), keepdim=True)
        t = y1 + F.interpolate(y2, size=y1.shape[-2:], mode='bilinear', align_corners=False)
        close(got, c3(torch.cat([t, y1], 1)))
    assert sorted(computed) == list(range(H))  # every source row exactly once


def test_refusals(x):
    with pytest.raises(ValueError, match='band_rows'):
        bands.evaluate(source(x), 0, lambda *a: None)
    bn = nn.BatchNorm2d(6).train()
    with pytest.raises(RuntimeError, match='eval mode'):
        bands.module_node(bn, source(x))
    with pytest.raises(TypeError, match='no banded form of AdaptiveAvgPool2d'):
        bands.module_node(nn.AdaptiveAvgPool2d(3), source(x))
    with pytest.raises(ValueError, match='zero padding'):
        bands.Conv(nn.Conv2d(6, 6, 3, padding=1, padding_mode='reflect'), source(x))
    with pytest.raises(ValueError, match='kernel == stride'):
        bands.ConvTranspose(nn.ConvTranspose2d(6, 6, 3, stride=2), source(x))
    with pytest.raises(ValueError, match='supports'):
        bands.Resize(source(x), size=(5, 5), mode='bicubic')
    with pytest.raises(ValueError, match='different heights'):
        bands.add(source(x), bands.Resize(source(x), size=(10, W)))
    with pytest.raises(ValueError, match='outside'):
        bands.Crop(source(x), (H, W), top=1)


@pytest.mark.parametrize('band_rows', [1, 4, 100])
def test_adaptive_average_pooling_in_bands(x, band_rows):
    """PyTorch's bins (overlapping when the size does not divide), the map
    walked once in bands for every size, never held whole."""
    sizes = [(1, 1), (2, 2), (3, 3), (6, 6), (5, 7)]
    conv = nn.Conv2d(x.shape[1], 4, 3, padding=1)
    node = bands.Conv(conv, bands.Tensor(x))
    seen = []
    compute = node.compute
    node.compute = lambda a, b: seen.append((a, b)) or compute(a, b)
    with torch.no_grad():
        pooled = bands.adaptive_avg_pool(node, sizes, band_rows)
        whole = conv(x)
    for out, size in zip(pooled, sizes):
        torch.testing.assert_close(out, F.adaptive_avg_pool2d(whole, size), rtol=1e-5,
                                   atol=1e-6)
    assert sum(b - a for a, b in seen) == node.height  # each row once
    assert max(b - a for a, b in seen) == min(band_rows, node.height)
