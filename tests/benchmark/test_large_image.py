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


def test_file_and_budget_cases_and_the_spilling_ratio(tmp_path):
    cases = bench.plan_cases(['fpn_ufo_s12', 'upernet_swin_t'], ['file', 'budget', 'whole'],
                             [2048, 1024], threads=1, max_ram_gb=4, image_dir=str(tmp_path))
    assert [(c['model'], c['method'], c['side']) for c in cases] == [
        ('fpn_ufo_s12', 'file', 1024), ('fpn_ufo_s12', 'file', 2048),
        ('fpn_ufo_s12', 'budget', 1024), ('fpn_ufo_s12', 'budget', 2048),
        ('fpn_ufo_s12', 'whole', 1024), ('fpn_ufo_s12', 'whole', 2048),
        ('upernet_swin_t', 'whole', 1024), ('upernet_swin_t', 'whole', 2048)]
    assert all(c['image_dir'] == str(tmp_path) for c in cases[:4])
    assert [c.get('max_ram_gb') for c in cases[:4]] == [None, None, 4, 4]
    bf16 = bench.plan_cases(['fpn_ufo_s12'], ['stream', 'budget', 'whole'], [1024], threads=1,
                            token_dtype='bf16')
    assert [c.get('token_dtype') for c in bf16] == ['bf16', 'bf16', None]
    rows = [dict(model='fpn_ufo_s12', method='file', side=8192, status='ok', seconds=100.,
                 peak_rss_gb=3.0),
            dict(model='fpn_ufo_s12', method='budget', side=8192, status='ok', seconds=110.,
                 peak_rss_gb=2.0, max_ram_gb=4, token_place='disk'),
            dict(model='fpn_ufo_s12', method='budget', side=32768, status='ok',
                 seconds=16 * 100. * 1.15, peak_rss_gb=3.9, max_ram_gb=4, token_place='disk')]
    bench.write_outputs(rows, str(tmp_path), 'test run')
    assert rows[1]['per_px_vs_file'] == pytest.approx(1.1) and rows[1]['file_side'] == 8192
    # no file run at 32768: against the largest side the file method ran at
    assert rows[2]['per_px_vs_file'] == pytest.approx(1.15) and rows[2]['file_side'] == 8192
    table = (tmp_path / 'large_image.md').read_text()
    assert '| 4 GiB: disk; 1.15 (file at 8192) |' in table


def test_a_real_budget_case_reads_and_writes_tiffs(tmp_path):
    case = dict(model='fpn_ufo_s12', method='budget', side=96, threads=1, max_ram_gb=8,
                image_dir=str(tmp_path), token_dtype='bf16')
    row = harness.run_in_child(bench.CASE_MODULE, case, mem_limit_gb=8, timeout_s=300, threads=1)
    assert row['status'] == 'ok', row
    assert row['token_place'] in ('compute', 'disk') and row['token_gb'] is not None
    assert row['band_rows'] >= 96  # the default for this width: all rows in one band
    import tifffile
    image = tifffile.TiffFile(str(tmp_path / 'noise_96.tif'))
    assert image.pages[0].is_tiled and image.pages[0].shape == (96, 96, 3)
    assert not list(tmp_path.glob('labels_*'))  # the label file removed after the case
