import pytest

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

@pytest.fixture(scope='session')
def seg_demo(tmp_path_factory) -> trained_demos.TrainedDemo:
    """The UperNet demo trained by mmseg's own tools/train.py."""
    return trained_demos.train_seg_demo(tmp_path_factory.mktemp('seg_demo'))


@pytest.fixture(scope='session')
def det_demo(tmp_path_factory) -> trained_demos.TrainedDemo:
    """The Mask R-CNN demo trained by mmdet's own tools/train.py."""
    return trained_demos.train_det_demo(tmp_path_factory.mktemp('det_demo'))


@pytest.fixture(scope='session')
def cls_demo(tmp_path_factory) -> trained_demos.TrainedDemo:
    """The classifier demo trained by mmpretrain's own tools/train.py."""
    pytest.importorskip('mmpretrain', reason='mmpretrain is not installed: it needs '
                        'torchvision, which requirements/constraints-torch2.13-cpu.txt '
                        'cannot have')
    return trained_demos.train_cls_demo(tmp_path_factory.mktemp('cls_demo'))
