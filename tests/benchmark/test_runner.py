"""ufo_mm.benchmark.runner: the plan of cases and the extrapolation that skips
the ones too large (the whole run: tests/tools/test_benchmark.py)."""
from argparse import Namespace

import pytest

from ufo_mm.benchmark.runner import estimate, parse_shape, plan_cases, resolve_precisions


def test_parse_shape():
    assert parse_shape('512') == (512, 512) and parse_shape('1024x2048') == (1024, 2048)


def test_plan_sorts_inputs_by_pixels_and_gives_full_models_their_own():
    args = Namespace(models=['ufo_s12', 'upernet_ufo_s12'], sizes=['256', '64'],
                     shapes=['64x128'], full_sizes=['512'], precisions=['fp32', 'bf16'],
                     full_precisions=['fp32'])
    cases = [(c['model'], c['precision'], c['height'], c['width']) for c in plan_cases(args)]
    assert cases == [('ufo_s12', p, h, w) for p in ('fp32', 'bf16')
                     for h, w in ((64, 64), (64, 128), (256, 256))] + \
        [('upernet_ufo_s12', 'fp32', 512, 512)]


def test_estimate_by_growth_exponents():
    prev = dict(height=64, width=64, time_ms_median=100., base_rss_mb=200., fwd_mem_mb=10.)
    assert estimate(None, dict(model='vit_s', height=128, width=128)) == (None, None)
    t, mem = estimate(prev, dict(model='vit_s', height=128, width=128))  # pixels^2
    assert t == pytest.approx(0.1 * 16) and mem == pytest.approx((200 + 10 * 16) * 2**20)
    t, mem = estimate(prev, dict(model='ufo_s12', height=128, width=128))  # linear
    assert t == pytest.approx(0.1 * 4) and mem == pytest.approx((200 + 10 * 4) * 2**20)


def test_precisions_follow_the_cpu(monkeypatch):
    from ufo_mm import cpu_features
    monkeypatch.setattr(cpu_features, 'bf16_native', lambda: False)
    assert resolve_precisions(None) == ['fp32']
    assert resolve_precisions(['fp32', 'bf16']) == ['fp32', 'bf16-emulated']
    monkeypatch.setattr(cpu_features, 'bf16_native', lambda: True)
    assert resolve_precisions(None) == ['fp32', 'bf16']
