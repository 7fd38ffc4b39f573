"""Detections written as a COCO-style JSON file (``ufo_mm.io.detections``):
each instance's box as [x, y, w, h], score, class and mask RLE read back as
written, the file written an instance at a time, and nothing left under the
final name (nor a temporary file) when the disk fills."""
import errno
import io
import json

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from ufo_mm.io import detections

mask_util = pytest.importorskip('pycocotools.mask')
H, W = 40, 60


@pytest.fixture
def instances():
    masks = np.zeros((3, H, W), np.uint8)
    masks[0, 5:15, 10:30] = 1
    masks[1, 20:40, 0:8] = 1
    masks[2, 0:2, 58:60] = 1
    inst = InstanceData()
    inst.bboxes = torch.tensor([[10., 5., 30., 15.], [0., 20., 8., 40.], [58., 0., 60., 2.]])
    inst.scores = torch.tensor([0.9, 0.51234567, 0.3])
    inst.labels = torch.tensor([1, 0, 7])
    inst.masks = [mask_util.encode(np.asfortranarray(m)) for m in masks]
    return inst, masks


def test_rows_read_back(tmp_path, instances):
    inst, masks = instances
    path = detections.write_instances(tmp_path / 'out' / 'scene_instances.json', inst, H, W,
                                      classes=('road', 'car'))
    data = json.loads(path.read_text())
    assert (data['height'], data['width'], data['classes']) == (H, W, ['road', 'car'])
    rows = data['instances']
    assert [r['bbox'] for r in rows] == [[10, 5, 20, 10], [0, 20, 8, 20], [58, 0, 2, 2]]
    assert [r['score'] for r in rows] == [0.9, 0.51235, 0.3]
    assert [r['category_id'] for r in rows] == [1, 0, 7]
    assert [r.get('category') for r in rows] == ['car', 'road', None]  # 7: no name
    for row, mask in zip(rows, masks):
        assert row['segmentation']['size'] == [H, W]
        assert np.array_equal(mask_util.decode(row['segmentation']), mask)
    assert [p.name for p in path.parent.iterdir()] == ['scene_instances.json']


def test_no_masks_and_no_detections(tmp_path, instances):
    inst, _ = instances
    boxes_only = InstanceData(bboxes=inst.bboxes, scores=inst.scores, labels=inst.labels)
    rows = json.loads(detections.write_instances(tmp_path / 'a.json', boxes_only, H, W)
                      .read_text())['instances']
    assert len(rows) == 3 and 'segmentation' not in rows[0]
    empty = InstanceData(bboxes=torch.zeros(0, 4), scores=torch.zeros(0),
                         labels=torch.zeros(0, dtype=torch.long))
    data = json.loads(detections.write_instances(tmp_path / 'b.json', empty, H, W).read_text())
    assert data['instances'] == [] and data['classes'] is None


class FillingDisk(io.StringIO):
    """A file that takes ``room`` characters, then fails as a full disk does."""

    def __init__(self, room, writes):
        super().__init__()
        self.room, self.writes = room, writes

    def write(self, text):
        self.writes.append(len(text))
        if self.tell() + len(text) > self.room:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return super().write(text)


def test_a_full_disk_leaves_nothing_and_the_file_goes_an_instance_at_a_time(
        tmp_path, instances, monkeypatch):
    inst, _ = instances
    real_open = open
    writes = []

    def fake_open(path, mode='r', *args, **kwargs):
        real_open(path, mode).close()  # the temporary file exists, as on a real disk
        return FillingDisk(200, writes)
    monkeypatch.setattr(detections, 'open', fake_open, raising=False)
    path = tmp_path / 'scene_instances.json'
    with pytest.raises(OSError, match='No space left'):
        detections.write_instances(path, inst, H, W)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    assert len(writes) >= 2 and max(writes) < 200  # the head, then one row at a time
