"""The one-command demo, end to end in its smallest form: every artefact the
README promises is written, and the report's numbers are the evaluation logs'."""
import re

import cv2
import pytest

from demo.logs import evaluation_metrics
from tests.tool_runner import run_tool


def report_metrics(report: str) -> dict:
    """{(model, metric): value} from the report's first table."""
    table = report.split('## Metrics on the held-out split')[1].split('##')[0]
    rows = re.findall(r'^\| (UFO-ViT [^|]+) \| ([^|]+) \| ([-\d.e]+) \|$', table, re.M)
    return {(m.strip(), k.strip()): float(v) for m, k, v in rows}


def log_metric(log_text: str, key: str) -> float:
    """A metric as mmengine printed it in the test run's text log."""
    return float(re.findall(rf'{re.escape(key)}: ([\d.]+)', log_text)[-1])


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('demo')
    work, data = tmp / 'work', tmp / 'data'
    out = run_tool('demo.py', '--quick', '--det-iters', '3', '--seg-iters', '3',
                   '--num-train', '6', '--num-val', '3', '--img-size', '96', '--scales', '2',
                   '--work-dir', work, '--data-dir', data, timeout=900)
    return work, out.stdout


def test_report_and_pictures_written(demo_run):
    work, _ = demo_run
    report = (work / 'report.md').read_text()
    pictures = re.findall(r'!\[[^]]*\]\(([^)]+)\)', report)
    assert 'loss_curves.png' in pictures
    # det test pictures, seg side-by-side pictures, one composed picture per task and size
    assert len(pictures) >= 1 + 3 + 3 + 2
    for rel in pictures:
        img = cv2.imread(str(work / rel))
        assert img is not None and img.size > 0, rel
    assert '192x192' in report  # 2x the 96-px training size, both tasks
    assert (work / 'det' / 'last_checkpoint').is_file()
    assert (work / 'seg' / 'last_checkpoint').is_file()


def test_report_metrics_match_evaluation_logs(demo_run):
    work, stdout = demo_run
    metrics = report_metrics((work / 'report.md').read_text())
    det = evaluation_metrics(work / 'det' / 'test')
    seg = evaluation_metrics(work / 'seg' / 'test')
    det_log = next((work / 'det' / 'test').glob('*/*.log')).read_text()
    seg_log = next((work / 'seg' / 'test').glob('*/*.log')).read_text()
    assert metrics[('UFO-ViT Mask R-CNN', 'bbox mAP')] == pytest.approx(det['coco/bbox_mAP'])
    assert metrics[('UFO-ViT Mask R-CNN', 'segm mAP')] == pytest.approx(det['coco/segm_mAP'])
    assert metrics[('UFO-ViT UperNet', 'mIoU (%)')] == pytest.approx(seg['mIoU'])
    assert det['coco/bbox_mAP'] == pytest.approx(log_metric(det_log, 'coco/bbox_mAP'))
    assert seg['mIoU'] == pytest.approx(log_metric(seg_log, 'mIoU'))
    assert 'Time estimate:' in stdout


def test_failure_exits_non_zero(tmp_path):
    """A step that fails (here: a training image size below one patch) stops the demo."""
    out = run_tool('demo.py', '--quick', '--skip-seg', '--img-size', '8', '--num-train', '2',
                   '--num-val', '1', '--work-dir', tmp_path / 'w', '--data-dir', tmp_path / 'd',
                   check=False)
    assert out.returncode != 0
    assert 'demo FAILED' in out.stderr or 'Error' in out.stderr


def test_help_explains_size_and_real_data():
    out = run_tool('demo.py', '--help', timeout=300)
    for needle in ('--det-iters', '--img-size', '--arch', 'data/coco', 'ADEChallengeData2016'):
        assert needle in out.stdout
