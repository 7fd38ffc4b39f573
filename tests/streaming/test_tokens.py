"""Where the streamed backbone keeps its token tensors (ufo_mm.streaming.tokens),
and the device checks of the command lines (ufo_mm.devices), on the CPU. The
GPU side (tokens on the GPU or in pinned host memory) is tests/cuda."""
import pytest
import torch

from ufo_mm.devices import DeviceError, peak_device_gb, resolve_device
from ufo_mm.streaming.tokens import TokenStore, choose_place, resolve_place

CPU = torch.device('cpu')
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='checks a machine without CUDA')


@pytest.mark.parametrize('asked,place', [(None, 'auto'), ('auto', 'auto'), ('cpu', 'compute'),
                                         ('host', 'host'), ('compute', 'compute')])
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
    with pytest.raises(ValueError, match="'compute' or 'host'"):
        TokenStore(CPU, 'disk')


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
