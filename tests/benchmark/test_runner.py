"""ufo_mm.benchmark.runner: the plan of cases and the extrapolation that skips
the ones too large (the whole run: tests/tools/test_benchmark.py)."""
from argparse import Namespace

import pytest

from ufo_mm.benchmark.runner import (estimate, parse_shape, parse_train_size, plan_cases,
                                     plan_train_cases, resolve_precisions)


def test_parse_shape():
    assert parse_shape('512') == (512, 512) and parse_shape('1024x2048') == (1024, 2048)
    assert parse_train_size('512:2') == (512, 512, 2)
    assert parse_train_size('1024x2048') == (1024, 2048, 1)


def test_plan_sorts_inputs_by_pixels_and_gives_full_models_their_own():
    args = Namespace(models=['ufo_s12', 'upernet_ufo_s12'], sizes=['256', '64'],
                     shapes=['64x128'], full_sizes=['512'], precisions=['fp32', 'bf16'],
                     full_precisions=['fp32'], compile=False)
    cases = [(c['model'], c['precision'], c['height'], c['width']) for c in plan_cases(args)]
    assert cases == [('ufo_s12', p, h, w) for p in ('fp32', 'bf16')
                     for h, w in ((64, 64), (64, 128), (256, 256))] + \
        [('upernet_ufo_s12', 'fp32', 512, 512)]


def test_compile_adds_a_twin_right_after_each_backbone_case():
    args = Namespace(models=['ufo_s12', 'upernet_ufo_s12'], sizes=['64'], shapes=[],
                     full_sizes=['512'], precisions=['fp32'], full_precisions=['fp32'],
                     compile=True)
    cases = [(c['model'], c['height'], c.get('compile', False)) for c in plan_cases(args)]
    assert cases == [('ufo_s12', 64, False), ('ufo_s12', 64, True),
                     ('upernet_ufo_s12', 512, False)]  # full models are not compiled


def test_train_cases_with_and_without_cp_smallest_first():
    args = Namespace(train=True, train_models=['ufo_s12', 'swin_t'],
                     train_sizes=['128:1', '64:2'], compile=False)
    cases = [(c['model'], c['mode'], c['height'], c['batch'], c['with_cp'])
             for c in plan_train_cases(args)]
    assert cases == [(m, 'train', h, b, cp) for m in ('ufo_s12', 'swin_t')
                     for h, b in ((64, 2), (128, 1)) for cp in (False, True)]
    assert {c['precision'] for c in plan_train_cases(args)} == {'fp32'}
    args.compile = True
    assert [c.get('compile', False) for c in plan_train_cases(args)][:4] == \
        [False, True, False, True]
    args.train = False
    assert plan_train_cases(args) == []


def test_estimate_by_growth_exponents():
    prev = dict(height=64, width=64, time_ms_median=100., base_rss_mb=200., fwd_mem_mb=10.)
    assert estimate(None, dict(model='vit_s', height=128, width=128)) == (None, None)
    t, mem = estimate(prev, dict(model='vit_s', height=128, width=128))  # pixels^2
    assert t == pytest.approx(0.1 * 16) and mem == pytest.approx((200 + 10 * 16) * 2**20)
    t, mem = estimate(prev, dict(model='ufo_s12', height=128, width=128))  # linear
    assert t == pytest.approx(0.1 * 4) and mem == pytest.approx((200 + 10 * 4) * 2**20)
    t, _ = estimate(dict(prev, batch=2), dict(model='ufo_s12', height=128, width=128, batch=1))
    assert t == pytest.approx(0.1 * 2)  # the batch counts as pixels


def test_precisions_follow_the_cpu(monkeypatch):
    from ufo_mm import cpu_features
    monkeypatch.setattr(cpu_features, 'bf16_native', lambda: False)
    assert resolve_precisions(None) == ['fp32']
    assert resolve_precisions(['fp32', 'bf16']) == ['fp32', 'bf16-emulated']
    monkeypatch.setattr(cpu_features, 'bf16_native', lambda: True)
    assert resolve_precisions(None) == ['fp32', 'bf16']
