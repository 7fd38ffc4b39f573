"""tools/benchmark.py (ufo_mm.benchmark) in quick mode on tiny inputs: the files it writes, the
ratios, and that a case extrapolated past the memory budget is skipped instead
of run. No timing assertions: the machine is shared."""
import csv

import pytest
import torch

from tests.tool_runner import run_tool, tool_log
COLUMNS = ['model', 'label', 'kind', 'mode', 'precision', 'compiled', 'with_cp', 'height',
           'width', 'batch', 'megapixels', 'threads', 'status', 'time_ms_median', 'time_ms_min',
           'repeats', 'timing', 'time_ms_alone', 'compile_s', 'peak_rss_mb', 'base_rss_mb',
           'fwd_mem_mb', 'gflops', 'other_cpu', 'time_ratio_vs_ufo_s12', 'mem_ratio_vs_ufo_s12',
           'note']


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    # ViT-S/16's attention memory grows with pixels^2: from 64x128 to 256x256 it is
    # extrapolated past 1.5 GiB and must be skipped; UFO-ViT (linear) must run.
    proc = run_tool('benchmark.py', '--quick', '--threads', '1',
                    '--models', 'ufo_s12', 'vit_s', '--sizes', '64', '256', '--shapes', '64x128',
                    '--mem-budget-gb', '1.5', '--train', '--train-models', 'ufo_t12',
                    '--train-sizes', '64:2', '--out-dir', out)
    with open(out / 'benchmark.csv') as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames
    train = [r for r in rows if r['mode'] == 'train']
    return out, proc.stdout, header, [r for r in rows if r['mode'] == 'infer'], train


def test_csv_columns_and_one_row_per_case(quick_run):
    _, _, header, rows, _ = quick_run
    assert header == COLUMNS
    cases = {(r['model'], r['precision'], int(r['height']), int(r['width'])) for r in rows}
    assert cases == {(m, 'fp32', h, w) for m in ('ufo_s12', 'vit_s')
                     for h, w in ((64, 64), (64, 128), (256, 256))}
    assert all(r['threads'] == '1' for r in rows)


def test_measurements_are_sane(quick_run):
    _, _, _, rows, _ = quick_run
    ok = [r for r in rows if r['status'] == 'ok']
    assert len(ok) == 5
    for r in ok:
        assert float(r['time_ms_median']) >= float(r['time_ms_min']) > 0
        assert int(r['repeats']) == 1  # quick mode
        peak, base = float(r['peak_rss_mb']), float(r['base_rss_mb'])
        assert peak >= base > 50  # a process with torch loaded
        assert float(r['fwd_mem_mb']) == pytest.approx(peak - base, abs=0.01)
        assert float(r['gflops']) > 0  # counted for inputs up to 1024x1024
        assert float(r['other_cpu']) >= 0  # CPU other processes took meanwhile
        assert float(r['time_ms_alone']) > 0  # the memory run's own timed forward


def test_backbones_timed_interleaved_with_the_peers_at_their_size(quick_run):
    """Every model that ran at a size is timed again in one process with the
    others at that size (a slow phase of the machine hits all of them)."""
    _, stdout, _, rows, _ = quick_run
    by = {(r['model'], int(r['height']), int(r['width'])): r for r in rows}
    for h, w in ((64, 64), (64, 128)):
        assert by[('ufo_s12', h, w)]['timing'] == by[('vit_s', h, w)]['timing'] == \
            'interleaved, 2 models'
        assert f'interleaved infer fp32 {h}x{w}: UFO-ViT-S12/16' in stdout
    assert by[('ufo_s12', 256, 256)]['timing'] == 'interleaved, 1 model'  # ViT-S skipped
    assert by[('vit_s', 256, 256)]['timing'] == ''


def test_ratios_are_relative_to_ufo_s12(quick_run):
    _, _, _, rows, _ = quick_run
    by = {(r['model'], int(r['height']), int(r['width'])): r for r in rows}
    for h, w in ((64, 64), (64, 128)):
        ufo, vit = by[('ufo_s12', h, w)], by[('vit_s', h, w)]
        assert float(ufo['time_ratio_vs_ufo_s12']) == pytest.approx(1.0)
        assert float(vit['time_ratio_vs_ufo_s12']) == pytest.approx(
            float(vit['time_ms_median']) / float(ufo['time_ms_median']), rel=1e-2)
        assert float(vit['mem_ratio_vs_ufo_s12']) == pytest.approx(
            float(vit['fwd_mem_mb']) / float(ufo['fwd_mem_mb']), rel=1e-2)


def test_quadratic_model_skipped_past_memory_budget(quick_run):
    _, stdout, _, rows, _ = quick_run
    by = {(r['model'], int(r['height'])): r for r in rows}
    assert by[('ufo_s12', 256)]['status'] == 'ok'
    skipped = by[('vit_s', 256)]
    assert skipped['status'] == 'skipped (OOM risk)'
    assert 'GiB' in skipped['note'] and skipped['time_ms_median'] == ''
    assert 'skipped (OOM risk)' in stdout


def test_plot_and_summary_written(quick_run):
    out, stdout, _, _, _ = quick_run
    png = out / 'benchmark.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 10_000
    assert (out / 'benchmark_summary.txt').exists()
    tables = (out / 'benchmark_tables.md').read_text()
    assert '| UFO-ViT-S12/16 |' in tables and '| 64x64 | 64x128 | 256x256 |' in tables
    assert 'skipped (OOM risk)' in tables
    assert 'plain fp32 GEMM 4096^3' in stdout
    assert 'threads per case: 1' in stdout


def test_train_rows_with_and_without_cp_interleaved(quick_run):
    """--train: the training step of each --train-models at --train-sizes (64:2),
    without and with with_cp, alone for memory then interleaved."""
    out, stdout, _, _, train = quick_run
    assert [(r['model'], r['height'], r['batch'], r['with_cp']) for r in train] == \
        [('ufo_t12', '64', '2', 'False'), ('ufo_t12', '64', '2', 'True')]
    for r in train:
        assert r['status'] == 'ok' and r['compiled'] == 'False' and r['precision'] == 'fp32'
        assert float(r['time_ms_median']) > 0 and float(r['fwd_mem_mb']) > 0
        assert r['timing'] == 'interleaved, 2 models' and r['gflops'] == ''
    assert 'interleaved train fp32 64x64 batch 2: UFO-ViT-T12/16' in stdout
    tables = (out / 'benchmark_tables.md').read_text()
    assert '| UFO-ViT-T12/16 +cp | 64x64 | 2 |' in tables


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error without a GPU')
def test_device_cuda_without_gpu_stops_with_one_line(tmp_path):
    proc = run_tool('benchmark.py', '--device', 'cuda', '--out-dir', tmp_path / 'gpu',
                    check=False, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.startswith('benchmark: --device cuda: CUDA is not available here')
    assert proc.stderr.count('\n') == 1 and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'gpu').exists()


def test_gpu_benchmark_dry_run_on_the_cpu(tmp_path):
    """--device cpu --gpu-plan: the GPU benchmark's path with wall-clock timers."""
    out = tool_log('benchmark.py', '--device', 'cpu', '--gpu-plan', '--quick', '--models',
                   'ufo_s12', '--sizes', '64', '--no-compile', '--out-dir', tmp_path)
    assert 'plan: 2 cases' in out and 'DRY RUN' in out
    for name in ('gpu_benchmark.csv', 'gpu_benchmark_tables.md', 'gpu_benchmark.png',
                 'gpu_benchmark_log.txt'):
        assert (tmp_path / name).exists()
