"""ufo_mm.benchmark.gpu: the device check, the plan, the precision settings,
the ratios, a case's failures as statuses (oom and what it skips, a failing
compile), and a dry run of the whole path on the CPU (wall-clock timers in
place of CUDA events) writing the CSV, tables and plot. The CUDA tests run
only where there is a GPU. No timing assertions: the machine is shared."""
import csv

import pytest
import torch
import torch.nn as nn

from ufo_mm.benchmark import gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
DRY = ['--device', 'cpu', '--gpu-plan', '--warmup', '1', '--repeats', '2']


class TinyBackbone(nn.Module):
    """Two maps out, as a pyramid; with ``oom_from`` a CUDA out-of-memory on
    inputs of that side or more."""

    def __init__(self, oom_from=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.oom_from = oom_from

    def forward(self, x):
        if self.oom_from and x.shape[-1] >= self.oom_from:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 80 GiB')
        y = self.conv(x)
        return y, y[..., ::2, ::2]


def tiny_builders(swin_oom_from=None):
    return {'ufo_s12': TinyBackbone, 'swin_t': lambda: TinyBackbone(swin_oom_from),
            'xcit_s12': TinyBackbone}


def row(model, H, time_ms, mem, status='ok', mode='forward', compiled=False, precision='bf16'):
    return dict(model=model, mode=mode, compiled=compiled, precision=precision, height=H,
                width=H, batch=1, status=status,
                time_ms_median=time_ms if status == 'ok' else None,
                peak_mem_gb=mem if status == 'ok' else None)


# the device check


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error without a GPU')
@pytest.mark.parametrize('name', ['cuda', 'cuda:1'])
def test_no_cuda_is_one_line_naming_the_problem(name):
    with pytest.raises(gpu.DeviceUnavailable) as e:
        gpu.check_device(name)
    msg = str(e.value)
    assert msg.startswith(f'--device {name}: CUDA is not available here (torch ')
    assert torch.__version__ in msg and '\n' not in msg
    assert ('built without CUDA' in msg) == (torch.version.cuda is None)


def test_cpu_only_as_a_dry_run_and_other_devices_refused():
    assert gpu.check_device('cpu', dry_run=True) == torch.device('cpu')
    with pytest.raises(gpu.DeviceUnavailable, match='--gpu-plan'):
        gpu.check_device('cpu')
    with pytest.raises(gpu.DeviceUnavailable, match='only cpu and cuda'):
        gpu.check_device('meta')
    with pytest.raises(gpu.DeviceUnavailable, match='not a device'):
        gpu.check_device('gpu0')


# the plan


def test_default_plan():
    args = gpu.parse_args([])
    cases = gpu.plan_cases(args)
    eager = [c for c in cases if not c['compiled']]
    compiled = [c for c in cases if c['compiled']]
    assert cases == eager + compiled  # compiled cases last: the time budget cuts them first
    assert len(eager) == 3 * 4 * 4 * 2
    assert {(c['precision'], c['height'], c['mode']) for c in compiled} == {
        ('bf16', 2048, 'forward')}
    assert [c['model'] for c in compiled] == ['ufo_s12', 'swin_t', 'xcit_s12']
    keys = {gpu.ratio_key(c) + (c['model'], ) for c in eager}
    assert all(gpu.ratio_key(dict(c, compiled=False)) + (c['model'], ) in keys for c in compiled)
    # each configuration: the reference first, sides smallest first
    assert [c['model'] for c in eager[:3]] == ['ufo_s12', 'swin_t', 'xcit_s12']
    assert [c['height'] for c in eager[:12:3]] == [512, 1024, 2048, 4096]
    assert all(c['batch'] == 1 and c['height'] == c['width'] for c in cases)
    assert 'estimated' in gpu.describe_plan(cases, args)[0]


def test_quick_and_narrowed_plans():
    quick = gpu.plan_cases(gpu.parse_args(['--quick']))
    assert {c['height'] for c in quick} == {256, 512}
    assert {c['precision'] for c in quick} == {'bf16'}
    assert [(c['model'], c['mode'], c['height']) for c in quick if c['compiled']] == [
        ('ufo_s12', 'forward', 256), ('ufo_s12', 'train', 256)]
    assert {c['precision'] for c in gpu.plan_cases(gpu.parse_args(['--quick'] + DRY))} == {
        'fp32'}
    narrow = gpu.plan_cases(gpu.parse_args(
        ['--models', 'swin_t', 'ufo_s12', '--sizes', '512', '1024', '--train-sizes', '1024',
         '--precisions', 'fp32', 'tf32', '--compile-precisions', 'tf32', '--compile-sizes',
         '1024', '--compile-modes', 'forward', 'train']))
    assert [(c['mode'], c['compiled'], c['precision'], c['height'], c['model'])
            for c in narrow if c['mode'] == 'train' or c['compiled']] == [
        ('train', False, 'fp32', 1024, 'ufo_s12'), ('train', False, 'fp32', 1024, 'swin_t'),
        ('train', False, 'tf32', 1024, 'ufo_s12'), ('train', False, 'tf32', 1024, 'swin_t'),
        ('forward', True, 'tf32', 1024, 'ufo_s12'), ('forward', True, 'tf32', 1024, 'swin_t'),
        ('train', True, 'tf32', 1024, 'ufo_s12'), ('train', True, 'tf32', 1024, 'swin_t')]
    assert not any(c['compiled'] for c in gpu.plan_cases(gpu.parse_args(['--no-compile'])))


# precision


@pytest.mark.parametrize('precision', gpu.PRECISIONS)
def test_tf32_flags_set_by_the_case_and_restored(precision):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = False, True  # torch's defaults
        with pytest.raises(KeyError):
            with gpu.tf32_flags(precision):
                assert matmul.allow_tf32 == cudnn.allow_tf32 == (precision == 'tf32')
                raise KeyError  # restored on errors too
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


@pytest.mark.parametrize('precision, dtype', [('fp32', torch.float32), ('tf32', torch.float32),
                                              ('bf16', torch.bfloat16)])
def test_autocast(precision, dtype):
    a = torch.randn(4, 4)
    with gpu.autocast(precision, 'cpu'):
        assert (a @ a).dtype == dtype


# ratios, tables


def test_ratios_are_peer_over_ufo_at_the_same_case():
    rows = [row('ufo_s12', 512, 10., 2.), row('swin_t', 512, 30., 1.),
            row('xcit_s12', 512, 15., None),  # no memory counter (the CPU dry run)
            row('swin_t', 512, 0, 0, status='oom', precision='fp32'),
            row('ufo_s12', 512, 5., 2.5, compiled=True), row('swin_t', 512, 20., 5., compiled=True),
            row('ufo_s12', 512, 40., 4., mode='train'), row('swin_t', 512, 60., 2., mode='train'),
            row('swin_t', 1024, 80., 8.)]  # UFO not run at 1024
    gpu.add_ratios(rows)
    ratios = [(r['time_ratio_vs_ufo_s12'], r['mem_ratio_vs_ufo_s12']) for r in rows]
    assert ratios == [(1.0, 1.0), (3.0, 0.5), (1.5, None), (None, None), (1.0, 1.0),
                      (4.0, 2.0), (1.0, 1.0), (1.5, 0.5), (None, None)]
    tables = gpu.markdown_tables([dict(r, label='', gpu_name='H200', torch_version='2.11')
                                  for r in rows])
    assert '| Swin-T | bf16 | 30.0 (x3.00) | 80.0 |' in tables
    assert '| Swin-T | fp32 | oom |  |' in tables
    assert '| UFO-ViT-S12/16 | bf16 | 2.00 |' in tables  # the reference: no ratio
    assert '**forward (eval, no_grad), torch.compile: time, ms**' in tables
    assert 'first call (the compile and one run), s' in tables


# one case: its failures


@pytest.mark.parametrize('compiled', [False, True])
def test_out_of_memory_is_the_status(compiled, monkeypatch):
    monkeypatch.setattr(torch, 'compile', lambda m: m)  # the plumbing, not inductor
    case = dict(model='swin_t', mode='train', compiled=compiled, precision='fp32', height=64,
                width=64, batch=1)
    res = gpu.measure_case(case, gpu.CpuBackend(), dict(warmup=1, repeats=2),
                           tiny_builders(swin_oom_from=64))
    assert res['status'] == 'oom' and 'Tried to allocate' in res['note']


def test_failing_compile_is_the_status(monkeypatch):
    def failing_compile(model):
        def run(x):
            raise RuntimeError('inductor: no C++ compiler')
        return run
    monkeypatch.setattr(torch, 'compile', failing_compile)
    case = dict(model='ufo_s12', mode='forward', compiled=True, precision='fp32', height=32,
                width=32, batch=1)
    res = gpu.measure_case(case, gpu.CpuBackend(), dict(warmup=1, repeats=2), tiny_builders())
    assert res['status'] == 'compile error: RuntimeError: inductor: no C++ compiler'


def test_run_skips_what_follows_an_oom(tmp_path, monkeypatch, capsys):
    """Swin-T OOMs at 64: its 128 case and the compiled twin of its 64 case
    are skipped; UFO-ViT and XCiT run everything; compile_s is the first call."""
    monkeypatch.setattr(torch, 'compile', lambda m: m)
    rows = gpu.run_gpu_benchmark(
        DRY + ['--sizes', '32', '64', '128', '--precisions', 'fp32', '--modes', 'forward',
               '--compile-precisions', 'fp32', '--compile-sizes', '64',
               '--out-dir', str(tmp_path)], builders=tiny_builders(swin_oom_from=64))
    status = {(r['model'], r['height'], r['compiled']): r['status'] for r in rows}
    assert status.pop(('swin_t', 64, False)) == 'oom'
    assert status.pop(('swin_t', 128, False)) == 'skipped (oom at 64x64)'
    assert status.pop(('swin_t', 64, True)) == 'skipped (eager oom)'
    assert set(status.values()) == {'ok'} and len(status) == 3 + 3 + 1 + 2
    compiled = [r for r in rows if r['compiled'] and r['status'] == 'ok']
    assert all(r['compile_s'] > 0 for r in compiled)
    assert all(r['compile_s'] is None for r in rows if not r['compiled'])
    out = capsys.readouterr().out
    assert 'plan: 12 cases' in out and '[12/12' in out and 'skipped (oom at 64x64)' in out
    assert (tmp_path / 'gpu_benchmark_log.txt').read_text().count('\n') > 12


def test_time_budget_skips_the_rest():
    built = []
    rows = gpu.run_gpu_benchmark(DRY + ['--sizes', '32', '--precisions', 'fp32',
                                        '--no-compile', '--time-budget-s', '1e-9',
                                        '--out-dir', ''],
                                 builders={m: lambda: built.append(1) for m in gpu.BACKBONES})
    assert len(rows) == 6 and not built
    assert {r['status'] for r in rows} == {'skipped (time budget)'}


# the dry run of the real backbones


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    """The three backbones at 64x64, fp32, forward and training step, eager,
    through the same code as on the GPU."""
    pytest.importorskip('timm')
    out = tmp_path_factory.mktemp('gpu_bench')
    rows = gpu.run_gpu_benchmark(DRY + ['--sizes', '64', '--precisions', 'fp32',
                                        '--no-compile', '--out-dir', str(out)])
    return out, rows


def test_dry_run_measures_every_backbone(dry_run):
    _, rows = dry_run
    assert [(r['model'], r['mode']) for r in rows] == [
        (m, mode) for mode in gpu.MODES for m in ('ufo_s12', 'swin_t', 'xcit_s12')]
    for r in rows:
        assert r['status'] == 'ok', r['status']
        assert r['time_ms_median'] >= r['time_ms_min'] > 0 and r['repeats'] == 2
        assert r['peak_mem_gb'] is None and r['compile_s'] is None  # no memory counter
        assert r['time_ratio_vs_ufo_s12'] == pytest.approx(
            r['time_ms_median'] / next(u['time_ms_median'] for u in rows
                                       if u['model'] == 'ufo_s12' and u['mode'] == r['mode']))
    sources = {r['model']: r['source'] for r in rows}
    assert sources['ufo_s12'] == 'ufo_mm.models.ufo_vit.UFOViT'
    assert sources['swin_t'].endswith('.SwinTransformer') and 'xcit' in sources['xcit_s12']


def test_dry_run_writes_csv_tables_plot(dry_run):
    out, rows = dry_run
    with open(out / 'gpu_benchmark.csv') as f:
        reader = csv.DictReader(f)
        written = list(reader)
    assert reader.fieldnames == gpu.CSV_COLUMNS and len(written) == len(rows) == 6
    assert {r['torch_version'] for r in written} == {torch.__version__}
    assert written[0]['gpu_name'].startswith('cpu (dry run')
    assert written[1]['time_ratio_vs_ufo_s12'] != '' and written[1]['peak_mem_gb'] == ''
    tables = (out / 'gpu_benchmark_tables.md').read_text()
    assert '| model | precision | 64x64 |' in tables and '| XCiT-S12/16 | fp32 |' in tables
    png = (out / 'gpu_benchmark.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'


def test_xcit_takes_any_input_size():
    """No img_size at creation: timm's XCiT runs forward_features on 64x96."""
    pytest.importorskip('timm')
    model = gpu.build_xcit_s12().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 1 + 4 * 6, 384)


# on a GPU


@needs_cuda
def test_cuda_cases_measure_time_and_memory(tmp_path):
    rows = gpu.run_gpu_benchmark(['--device', 'cuda', '--models', 'ufo_s12', 'swin_t',
                                  '--sizes', '128', '--precisions', 'fp32', 'bf16',
                                  '--no-compile', '--warmup', '1', '--repeats', '3',
                                  '--out-dir', str(tmp_path)])
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        assert r['status'] == 'ok', r['status']
        assert r['time_ms_median'] > 0 and r['peak_mem_gb'] > 0
        assert r['mem_ratio_vs_ufo_s12'] > 0 and r['gpu_name'] == torch.cuda.get_device_name()
    assert not torch.backends.cuda.matmul.allow_tf32  # restored to torch's default


@needs_cuda
def test_cuda_events_time_what_runs():
    backend = gpu.CudaBackend(gpu.check_device('cuda'))
    a = torch.randn(2048, 2048, device='cuda')
    times = backend.time(lambda: a @ a, 3)
    assert len(times) == 3 and all(t > 0 for t in times)
