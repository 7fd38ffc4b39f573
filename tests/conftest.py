import dataclasses
import json
import os
from pathlib import Path

import pytest
from filelock import FileLock

from tests import trained_demos


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False,
                     help='also run tests marked slow (training to a metric, large inputs)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


# The demos trained once per session (tests/trained_demos.py); every test that needs a
# trained checkpoint or work dir shares them, and copies a work dir before writing to it.
# Under pytest-xdist (tools/run_tests.sh runs a worker per core) the workers share them too:
# the first to need one trains it, under a file lock, and the others read its record.

def once_per_session(tmp_path_factory, name: str, train) -> trained_demos.TrainedDemo:
    """``train(folder)`` run once for the whole test session, all workers included."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        base = base.parent  # the folder above the workers' own, shared by all of them
    record = base / f'{name}.json'
    with FileLock(str(base / f'{name}.lock')):
        if record.exists():
            fields = json.loads(record.read_text())
            return trained_demos.TrainedDemo(**{k: Path(v) if k in ('config', 'data_root',
                                                                     'work_dir') else v
                                                for k, v in fields.items()})
        folder = base / name
        folder.mkdir()
        demo = train(folder)
        record.write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                      for k, v in dataclasses.asdict(demo).items()}))
        return demo


@pytest.fixture(scope='session')
def seg_demo(tmp_path_factory) -> trained_demos.TrainedDemo:
    """The UperNet demo trained by mmseg's own tools/train.py."""
    return once_per_session(tmp_path_factory, 'seg_demo', trained_demos.train_seg_demo)


@pytest.fixture(scope='session')
def det_demo(tmp_path_factory) -> trained_demos.TrainedDemo:
    """The Mask R-CNN demo trained by mmdet's own tools/train.py."""
    return once_per_session(tmp_path_factory, 'det_demo', trained_demos.train_det_demo)


@pytest.fixture(scope='session')
def cls_demo(tmp_path_factory) -> trained_demos.TrainedDemo:
    """The classifier demo trained by mmpretrain's own tools/train.py."""
    pytest.importorskip('mmpretrain', reason='mmpretrain is not installed: it needs '
                        'torchvision, which requirements/constraints-torch2.13-cpu.txt '
                        'cannot have')
    return once_per_session(tmp_path_factory, 'cls_demo', trained_demos.train_cls_demo)
