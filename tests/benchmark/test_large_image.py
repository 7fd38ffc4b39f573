"""The large-image benchmark's bookkeeping (``ufo_mm.benchmark.large_image``):
cases planned per model, method and side; a method's larger sides skipped
once it failed; time-per-pixel ratios against the same model's whole-image
run; the table and the plot written. One real case (a 96-px Semantic FPN in
its own process) checks what a row holds."""
import json

import pytest

from ufo_mm.benchmark import harness
from ufo_mm.benchmark import large_image as bench


def test_plan_and_skip_after_a_failure(monkeypatch):
    cases = bench.plan_cases(['upernet_ufo_s12'], ['whole', 'stream'], [4096, 1024, 2048],
                             threads=2)
    assert [(c['method'], c['side']) for c in cases] == [
        ('whole', 1024), ('whole', 2048), ('whole', 4096),
        ('stream', 1024), ('stream', 2048), ('stream', 4096)]
    swin = bench.plan_cases(['upernet_swin_t'], ['stream', 'whole', 'slide'], [1024], threads=2)
    assert [c['method'] for c in swin] == ['whole', 'slide']  # Swin-T cannot be streamed
    ran = []

    def fake(module, case, mem_limit_gb, timeout_s, threads, forkserver):
        assert module == bench.CASE_MODULE and threads == 2
        ran.append((case['method'], case['side']))
        if case['method'] == 'whole' and case['side'] >= 2048:
            return dict(case, status='out of memory (> 22 GiB)', peak_rss_gb=22.1)
        return dict(case, status='ok', seconds=case['side'] / 1000, cpu_seconds=1.0,
                    peak_rss_gb=1.0)
    monkeypatch.setattr(harness, 'run_in_child', fake)
    rows = bench.run_cases(cases, 22, 60, log=lambda line: None)
    assert ('whole', 4096) not in ran and rows[2]['status'].startswith('skipped')
    assert rows[1]['status'].startswith('out of memory')


def test_ratios_table_and_plot(tmp_path):
    rows = [dict(model='upernet_ufo_s12', method='whole', side=2048, status='ok', seconds=70.,
                 cpu_seconds=140., peak_rss_gb=6.6),
            dict(model='upernet_ufo_s12', method='stream', side=8192, status='ok',
                 seconds=16 * 70. * 1.1, cpu_seconds=16 * 140., peak_rss_gb=3.5),
            dict(model='upernet_ufo_s12', method='whole', side=4096, status='out of memory',
                 peak_rss_gb=22.0)]
    bench.write_outputs(rows, str(tmp_path), 'test run')
    stream = rows[1]
    assert stream['per_px_vs_whole'] == pytest.approx(1.1)
    assert stream['cpu_per_px_vs_whole'] == pytest.approx(1.0)
    assert stream['whole_side'] == 2048  # the largest side whole-image ran at
    table = (tmp_path / 'large_image.md').read_text()
    assert '| UperNet UFO-ViT-S12/16 | stream | 8192 | 1232.0 | 2240.0 |' in table
    assert '1.10; 1.00 (whole at 2048)' in table and 'out of memory' in table
    assert json.loads((tmp_path / 'large_image.json').read_text())[1]['side'] == 8192
    assert (tmp_path / 'large_image.png').stat().st_size > 10_000


def test_one_real_case_in_its_own_process():
    case = dict(model='fpn_ufo_s12', method='stream', side=96, threads=1)
    row = harness.run_in_child(bench.CASE_MODULE, case, mem_limit_gb=8, timeout_s=300, threads=1)
    assert row['status'] == 'ok', row
    assert row['seconds'] > 0 and row['cpu_seconds'] > 0
    assert 0.2 < row['ready_rss_gb'] <= row['peak_rss_gb'] < 8
