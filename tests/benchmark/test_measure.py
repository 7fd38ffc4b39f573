"""ufo_mm.benchmark.measure: one case, or a group interleaved, in this process
(tiny inputs; torch.compile faked where only its bookkeeping is tested)."""
import os
import time

import pytest
import torch

from ufo_mm.benchmark.measure import (capped_repeats, fresh_compile_cache, run_case, run_group,
                                      time_stats, warm_up)
from ufo_mm.benchmark.zoo import build_backbone, make_train_step

COMMON = dict(precision='fp32', threads=1, warmup=1, repeats=2, max_timed_s=30.)


def test_time_stats_and_capped_repeats():
    assert time_stats([0.3, 0.1, 0.2]) == dict(time_ms_median=200., time_ms_min=100., repeats=3)
    assert capped_repeats(dict(repeats=5, max_timed_s=1.), 0.3) == 3
    assert capped_repeats(dict(repeats=5, max_timed_s=1.), 10.) == 1
    assert capped_repeats(dict(repeats=5), 10.) == 5
    assert warm_up(lambda: None, 0) == [] and len(warm_up(lambda: None, 3)) == 3


def test_run_case_measures_time_memory_and_flops():
    res = run_case(dict(COMMON, model='ufo_t12', height=64, width=64, flops=True))
    assert res['status'] == 'ok' and res['repeats'] == 2
    assert res['time_ms_median'] >= res['time_ms_min'] > 0
    assert res['peak_rss_mb'] >= res['base_rss_mb'] > 50 and res['gflops'] > 0
    assert res['compile_s'] is None


def test_training_step_case_leaves_gradients_unset():
    """A training step: forward + backward in train mode (autograd on inside the
    benchmark's no_grad), gradients set to None after it; memory above the build."""
    res = run_case(dict(COMMON, model='ufo_t12', height=64, width=64, mode='train', batch=2,
                        with_cp=True))
    assert res['status'] == 'ok' and res['time_ms_median'] > 0 and res['fwd_mem_mb'] > 0
    model = build_backbone('ufo_t12')  # eval mode
    grads = []
    model.blocks[0].gamma1.register_hook(lambda g: grads.append(g))
    step = make_train_step(model, model, torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        step()
    assert model.training and len(grads) == 1 and grads[0].abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_group_times_train_variants_interleaved_and_keeps_failures_apart():
    spec = dict(COMMON, model='group', height=64, width=64, mode='train', batch=2, repeats=3,
                members=[dict(model='ufo_t12'), dict(model='ufo_t12', with_cp=True),
                         dict(model='vit_s', with_cp=True)])  # vit_s: no with_cp here
    res = run_group(spec)
    eager, cp, failed = res['members']
    for m in (eager, cp):
        assert m['status'] == 'ok' and m['repeats'] == 3
        assert m['timing'] == 'interleaved, 3 models' and m['time_ms_median'] > 0
        assert 'compile_s' not in m
    assert failed['status'].startswith('error: ValueError') and 'time_ms_median' not in failed


class FakeCompiled:
    """torch.compile's stand-in: a first call that takes 0.3 s (the compile)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x):
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.3)
        return self.model(x)


def test_compile_time_reported_apart_from_the_steady_time(monkeypatch):
    monkeypatch.setattr(torch, 'compile', FakeCompiled)
    res = run_group(dict(COMMON, model='group', height=32, width=32, repeats=3,
                         members=[dict(model='ufo_t12'), dict(model='ufo_t12', compile=True)]))
    eager, compiled = res['members']
    assert compiled['status'] == 'ok' and compiled['repeats'] == 3
    assert compiled['compile_s'] >= 0.3 and compiled['time_ms_median'] < 300
    assert 'compile_s' not in eager


def test_a_failing_compile_is_the_members_status(monkeypatch):
    def broken(model):
        def call(x):
            raise RuntimeError('no C++ compiler')
        return call
    monkeypatch.setattr(torch, 'compile', broken)
    res = run_group(dict(COMMON, model='group', height=32, width=32, mode='train',
                         members=[dict(model='ufo_t12', compile=True), dict(model='ufo_t12')]))
    assert res['status'] == 'ok'
    assert res['members'][0]['status'] == 'error: RuntimeError: no C++ compiler'
    assert res['members'][1]['status'] == 'ok'


def test_fresh_compile_cache_is_a_new_directory_removed_after():
    before = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    with fresh_compile_cache(True):
        cache = os.environ['TORCHINDUCTOR_CACHE_DIR']
        assert os.path.isdir(cache) and not os.listdir(cache)
    assert not os.path.exists(cache) and os.environ.get('TORCHINDUCTOR_CACHE_DIR') == before


@pytest.mark.slow
def test_torch_compile_runs_a_backbone():
    """The real inductor compile (a C++ compiler; about a minute on 2 cores)."""
    res = run_group(dict(COMMON, model='group', height=32, width=32,
                         members=[dict(model='ufo_t12', compile=True)]))
    m = res['members'][0]
    assert m['status'] == 'ok' and m['compile_s'] > m['time_ms_median'] / 1e3
