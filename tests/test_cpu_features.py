"""ufo_mm.cpu_features: which precisions this CPU runs natively, decided from
the CPU (never assumed), and the default precision that follows."""
import pytest
import torch

from ufo_mm import cpu_features


@pytest.fixture
def fake_cpu(monkeypatch):
    """Fake the CPU: ``fake_cpu(flags, machine='x86_64', torch_checks=None)``."""

    def fake(flags, machine='x86_64', torch_checks=None):
        cpu_features.native_bf16_isa.cache_clear()
        monkeypatch.setattr(cpu_features, '_cpuinfo_flags', lambda: set(flags))
        monkeypatch.setattr(cpu_features.platform, 'machine', lambda: machine)
        checks = torch_checks or {}
        monkeypatch.setattr(cpu_features, '_torch_cpu_check', lambda name: checks.get(name))

    yield fake
    cpu_features.native_bf16_isa.cache_clear()


@pytest.mark.parametrize('flags, checks, isa', [
    ({'avx2', 'fma'}, {}, None),  # AMD EPYC (Zen 2/3), Intel before Cooper Lake
    ({'avx512f', 'avx512bw', 'avx512vl', 'avx512dq'}, {}, None),  # Skylake-SP: emulated
    ({'avx512f', 'avx512_bf16'}, {}, 'AVX512-BF16'),  # Cooper Lake, Zen 4
    ({'avx512_bf16', 'amx_bf16', 'amx_tile'}, {}, 'AMX-BF16'),  # Sapphire Rapids
    (set(), {'avx512_bf16': True, 'amx_tile': False}, 'AVX512-BF16'),  # torch's own check
    ({'avx512_bf16'}, {'avx512_bf16': False, 'amx_tile': False}, None),  # torch's check wins
])
def test_native_bf16_from_cpu_features(fake_cpu, flags, checks, isa):
    fake_cpu(flags, torch_checks=checks)
    assert cpu_features.native_bf16_isa() == isa
    assert cpu_features.bf16_native() is (isa is not None)
    dtype, why = cpu_features.default_cpu_dtype()
    if isa:
        assert dtype == torch.bfloat16 and isa in why and 'using bf16' in why
    else:
        assert dtype == torch.float32
        assert 'not native' in why and 'using fp32' in why


def test_arm_bf16_extension(fake_cpu):
    fake_cpu({'fp', 'asimd', 'bf16'}, machine='aarch64')
    assert cpu_features.native_bf16_isa() == 'Arm BF16'
    fake_cpu({'fp', 'asimd'}, machine='aarch64')
    assert not cpu_features.bf16_native()


def test_this_machine_is_reported_consistently():
    """The real check agrees with torch's own and names the CPU."""
    status = cpu_features.bf16_status()
    assert cpu_features.cpu_name() in status
    assert ('not native' in status) != cpu_features.bf16_native()
    if hasattr(torch.cpu, '_is_avx512_bf16_supported'):
        torch_says = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        assert cpu_features.bf16_native() == torch_says
    # oneDNN's bf16 primitives exist wherever bf16 is native (not the other way round)
    assert cpu_features.onednn_bf16_kernels() or not cpu_features.bf16_native()
