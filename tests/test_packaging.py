"""Package metadata: ranges, not pins, so that installing ufo-mm into an
existing OpenMMLab environment replaces nothing; the exact tested stack lives
in requirements/constraints*.txt, which tools/setup_env.sh installs from."""
import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
STACK = ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet', 'mmsegmentation')


def requirements():
    reqs = [Requirement(r) for r in importlib.metadata.requires('ufo-mm') or []]
    return {r.name.lower(): r for r in reqs if r.marker is None}


def test_installed_metadata_pins_nothing_of_the_stack():
    reqs = requirements()
    assert 'torch' not in reqs and 'torchvision' not in reqs  # as in every OpenMMLab package
    for name in STACK:
        if name in reqs:
            assert not any(s.operator in ('==', '===') for s in reqs[name].specifier), reqs[name]
    mmcv = reqs['mmcv'].specifier
    assert all(v in mmcv for v in ('2.0.1', '2.1.0')) and '2.2.0' not in mmcv
    assert '0.10.7' in reqs['mmengine'].specifier
    assert '3.3.0' in reqs['mmdet'].specifier and '1.2.2' in reqs['mmsegmentation'].specifier


@pytest.mark.parametrize('name', ['constraints.txt', 'constraints-torch2.14.txt'])
def test_constraints_files_pin_the_whole_stack(name):
    lines = (REPO / 'requirements' / name).read_text().splitlines()
    pins = dict(re.match(r'^([A-Za-z0-9_.-]+)==([^\s;#]+)', line).groups()
                for line in lines if line and not line.startswith('#'))
    pins = {k.lower(): v for k, v in pins.items()}
    for pkg in ('torch', 'mmcv', 'mmengine', 'mmdet', 'mmsegmentation', 'numpy'):
        assert pkg in pins, f'{name} does not pin {pkg}'
    # every requirement of the package is pinned too: the stack is reproducible
    missing = [r for r in requirements() if r not in pins]
    assert not missing, f'{name} does not pin {missing}'
    assert ('torchvision' in pins) == (name != 'constraints.txt')
