"""Detections of a whole image written as a COCO-style results file (JSON)."""
import json
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from .images import replaced_when_written

PathLike = Union[str, os.PathLike]


def instance_rows(instances, classes: Optional[Sequence[str]] = None) -> Iterator[dict]:
    """The COCO-style row of each detection, one at a time: ``bbox`` [x, y,
    w, h], ``score``, ``category_id``, ``category`` (with ``classes``) and
    ``segmentation`` (an RLE, when the instances have masks)."""
    masks = instances.masks if 'masks' in instances else None
    for i, ((x1, y1, x2, y2), score, label) in enumerate(zip(
            instances.bboxes.tolist(), instances.scores.tolist(), instances.labels.tolist())):
        row = dict(bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                   score=round(score, 5), category_id=int(label))
        if classes is not None and 0 <= label < len(classes):
            row['category'] = classes[label]
        if masks is not None:
            rle = dict(masks[i])
            if isinstance(rle['counts'], bytes):
                rle['counts'] = rle['counts'].decode()
            row['segmentation'] = dict(size=[int(n) for n in rle['size']], counts=rle['counts'])
        yield row


def write_instances(path: PathLike, instances, height: int, width: int,
                    classes: Optional[Sequence[str]] = None) -> Path:
    """Write detections (mmdet's ``InstanceData`` with masks as COCO RLE, as
    :func:`ufo_mm.streaming.detector.detect_large` gives) as JSON:
    ``{"height", "width", "classes", "instances": [{"bbox": [x, y, w, h],
    "score", "category_id", "category", "segmentation": RLE}]}``, each as in a
    COCO results file (``segmentation`` only when there are masks).

    The file is written as it goes, one instance at a time (no JSON text of
    the whole file is ever held), under a temporary name renamed to ``path``
    once complete: after an error (a full disk) nothing is left under
    ``path``, nor the temporary file. Returns the path."""
    head = dict(height=int(height), width=int(width),
                classes=list(classes) if classes is not None else None)
    with replaced_when_written(path) as part, open(part, 'w') as f:
        f.write(json.dumps(head)[:-1] + ', "instances": [')
        for i, row in enumerate(instance_rows(instances, classes)):
            f.write((', ' if i else '') + json.dumps(row))
        f.write(']}')
    return Path(path)
