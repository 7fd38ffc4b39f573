"""Where the streamed backbone keeps its token tensors (ufo_mm.streaming.tokens),
and the device checks of the command lines (ufo_mm.devices), on the CPU. The
GPU side (tokens on the GPU or in pinned host memory) is tests/cuda."""
import errno
import os

import pytest
import torch

from ufo_mm.analysis.process_stats import rss_bytes
from ufo_mm.devices import DeviceError, peak_device_gb, resolve_device
from ufo_mm.streaming import tokens
from ufo_mm.streaming.tokens import (MemoryBudgetError, ScratchDiskFull, TokenStore,
                                     choose_place, resolve_place)

GiB = 2**30

CPU = torch.device('cpu')
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='checks a machine without CUDA')


@pytest.mark.parametrize('asked,place', [(None, 'auto'), ('auto', 'auto'), ('cpu', 'compute'),
                                         ('host', 'host'), ('compute', 'compute'),
                                         ('disk', 'disk')])
def test_token_device_names_on_the_cpu(asked, place):
    assert resolve_place(asked, CPU) == place


def test_token_device_names_for_a_gpu_computation():
    gpu = torch.device('cuda', 0)
    assert resolve_place('cpu', gpu) == 'host'
    assert resolve_place('cuda', gpu) == resolve_place('cuda:0', gpu) == 'compute'
    with pytest.raises(ValueError, match='cuda:1.*computing device'):
        resolve_place('cuda:1', gpu)
    with pytest.raises(ValueError, match='computing device'):
        resolve_place('cuda', CPU)


def test_on_the_cpu_tokens_stay_where_they_are_computed():
    assert choose_place(1 << 50, CPU, 'auto') == 'compute'
    store = TokenStore(CPU, 'host', torch.bfloat16)  # no GPU: nothing to move
    assert store.place == 'compute' and store.device == CPU
    t = store.empty(1, 10, 4)
    assert t.dtype == torch.bfloat16 and not t.is_pinned()
    x = torch.randn(1, 3, 4)
    store.write(t, 2, 5, x)
    store.barrier()
    back = store.read(t, 2, 5)
    assert back.dtype == torch.float32
    assert torch.equal(back, x.to(torch.bfloat16).float())
    with pytest.raises(ValueError, match="'compute', 'host' or 'disk'"):
        TokenStore(CPU, 'tape')


@no_cuda
@pytest.mark.parametrize('name', ['cuda', 'cuda:0'])
def test_cuda_device_refused_in_one_line_without_cuda(name):
    with pytest.raises(DeviceError) as e:
        resolve_device(name)
    msg = str(e.value)
    assert '\n' not in msg and f'--device {name}' in msg and 'CUDA is not available' in msg


def test_unknown_devices_refused():
    with pytest.raises(DeviceError, match='not a device'):
        resolve_device('gpu0')
    with pytest.raises(DeviceError, match='only cpu and cuda'):
        resolve_device('meta')
    assert resolve_device('cpu') == CPU and resolve_device(None) == CPU
    assert peak_device_gb(CPU) is None


@no_cuda
def test_tools_stop_with_one_line_without_cuda(capsys):
    """tools/infer_large.py and tools/benchmark_gpu_stream.py with --device cuda
    on a machine without CUDA: exit with one line that names the problem, before
    reading anything (the paths here do not exist)."""
    import importlib.util
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    for tool, argv in (('infer_large', ['cfg.py', 'ckpt.pth', 'img.tif', '--device', 'cuda:0']),
                       ('benchmark_gpu_stream', ['--device', 'cuda'])):
        spec = importlib.util.spec_from_file_location(tool, repo / 'tools' / f'{tool}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(SystemExit) as e:
            module.main(argv)
        msg = str(e.value.code)
        assert msg.startswith(f'{tool}: --device cuda') and 'CUDA is not available' in msg
        assert '\n' not in msg


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_tokens_on_disk_round_trip_band_by_band(tmp_path, dtype):
    store = TokenStore(CPU, 'disk', dtype, scratch_dir=tmp_path)
    assert store.place == 'disk' and store.device == CPU
    folder = store.folder
    assert os.path.dirname(folder) == str(tmp_path)
    t = store.empty(2, 50, 6)
    assert t.shape == (2, 50, 6) and t.dtype == dtype
    assert os.listdir(folder) == []  # the file is unlinked at once: nothing to leave behind
    x = torch.randn(2, 50, 6)
    for a in range(0, 50, 7):  # bands in, any order of bands out
        store.write(t, a, min(a + 7, 50), x[:, a:a + 7])
    store.barrier()
    for a, b in ((0, 50), (13, 14), (40, 50), (0, 1)):
        band = store.read(t, a, b)
        assert band.dtype == torch.float32 and band.shape == (2, b - a, 6)
        assert torch.equal(band, x[:, a:b].to(dtype).float())  # the stored bits, as in memory
    store.close()
    assert not os.path.exists(folder) and os.listdir(tmp_path) == []


def test_reading_tokens_from_disk_does_not_grow_the_resident_set(tmp_path):
    """Read with pread, not mapped: 64 MB read band by band leave no pages in
    the process (a memory map would add them to its resident set)."""
    store = TokenStore(CPU, 'disk', scratch_dir=tmp_path)
    t = store.empty(1, 1 << 16, 256)  # 64 MiB of float32
    band = torch.ones(1, 1 << 12, 256)
    for a in range(0, 1 << 16, 1 << 12):
        store.write(t, a, a + (1 << 12), band)
    before, most = rss_bytes(), 0
    for a in range(0, 1 << 16, 1 << 12):
        assert store.read(t, a, a + (1 << 12)).sum() == band.numel()
        most = max(most, rss_bytes())
    assert most - before < 24 << 20  # a band or two, not the 64 MiB
    store.close()


def test_memory_budget_chooses_disk_and_names_the_minimum():
    held, band, token_bytes = 2 * GiB, GiB // 2, 3 * GiB
    choose = lambda ram, place='auto': choose_place(  # noqa: E731
        token_bytes, CPU, place, max_ram=ram, band_bytes=band, held_bytes=held)
    assert choose(None) == choose(6 * GiB) == 'compute'
    assert choose(int(5.4 * GiB)) == 'disk'
    assert choose(int(5.4 * GiB), 'compute') == 'compute'  # asked for: kept
    assert choose(6 * GiB, 'disk') == 'disk'
    with pytest.raises(MemoryBudgetError, match=r'1\.00 GiB is too small for one band: this run '
                       r'needs at least 2\.50 GiB \(2\.00 GiB held now.*0\.50 GiB for a band'):
        choose(GiB)


def test_full_scratch_disk_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    free = tokens.shutil.disk_usage(tmp_path).free
    with pytest.raises(ScratchDiskFull, match='scratch disk is too small.*--scratch-dir') as e:
        TokenStore(CPU, 'disk', scratch_dir=tmp_path, disk_bytes=free + GiB)
    assert e.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []

    def no_space(*args):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(tokens.os, 'posix_fallocate', no_space)
    store = TokenStore(CPU, 'disk', scratch_dir=tmp_path)
    with pytest.raises(ScratchDiskFull, match=r'scratch disk is full: a token tensor of .* GiB '
                       r'does not fit in .*ufo-mm-tokens-'):
        store.empty(1, 10, 4)
    monkeypatch.undo()
    t = store.empty(1, 10, 4)
    monkeypatch.setattr(tokens.os, 'pwrite', no_space)
    with pytest.raises(ScratchDiskFull, match='scratch disk is full'):
        store.write(t, 0, 10, torch.zeros(1, 10, 4))
    store.close()
    assert os.listdir(tmp_path) == []
