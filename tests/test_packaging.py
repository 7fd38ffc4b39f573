"""Package metadata: ranges, not pins, so that installing ufo-mm into an
existing OpenMMLab environment replaces nothing; the exact tested stack lives
in requirements/constraints*.txt, which tools/setup_env.sh installs from."""
import configparser
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


def pins_of(name: str) -> dict:
    lines = (REPO / 'requirements' / name).read_text().splitlines()
    pins = dict(re.match(r'^([A-Za-z0-9_.-]+)==([^\s;#]+)', line).groups()
                for line in lines if line and not line.startswith('#'))
    return {k.lower().replace('_', '-'): v for k, v in pins.items()}


def extras() -> dict:
    """setup.cfg's extras as {extra: [Requirement]} (read from the source tree: the
    installed metadata may come from another checkout's editable install)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / 'setup.cfg')
    return {name: [Requirement(r) for r in value.split('\n') if r.strip()]
            for name, value in cfg['options.extras_require'].items()}


@pytest.mark.parametrize('name', ['constraints.txt', 'constraints-torch2.13-cpu.txt'])
def test_constraints_files_pin_the_whole_stack(name):
    pins = pins_of(name)
    for pkg in ('torch', 'mmcv', 'mmengine', 'mmdet', 'mmsegmentation', 'numpy'):
        assert pkg in pins, f'{name} does not pin {pkg}'
    # every requirement of the package is pinned too: the stack is reproducible
    missing = [r for r in requirements() if r not in pins]
    assert not missing, f'{name} does not pin {missing}'
    # the default stack: a torch + torchvision pair, so mmpretrain and timm; the
    # torch 2.13 CPU alternative has no torchvision, so neither of them
    default = name == 'constraints.txt'
    for pkg in ('torchvision', 'mmpretrain', 'timm'):
        assert (pkg in pins) == default, (name, pkg)


def test_default_stack_satisfies_every_extra():
    """tools/setup_env.sh installs the extras [dev,pretrain,pretrain-dev] with the
    default constraints: each of their requirements is pinned, inside its range."""
    pins = pins_of('constraints.txt')
    found = extras()
    assert {'dev', 'pretrain', 'pretrain-dev'} <= set(found)
    for extra, reqs in found.items():
        for req in reqs:
            name = req.name.lower().replace('_', '-')
            assert name in pins, f'constraints.txt does not pin {name} (extra {extra})'
            assert pins[name] in req.specifier, (extra, str(req), pins[name])
    assert pins['torch'] == '2.14.1' and pins['torchvision'] == '0.29.1'
