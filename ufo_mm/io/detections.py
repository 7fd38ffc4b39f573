"""Detections of a whole image written as a COCO-style results file (JSON)."""
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


def write_instances(path: PathLike, instances, height: int, width: int,
                    classes: Optional[Sequence[str]] = None) -> Path:
    """Write detections (mmdet's ``InstanceData`` with masks as COCO RLE, as
    :func:`ufo_mm.streaming.detector.detect_large` gives) as JSON:
    ``{"height", "width", "classes", "instances": [{"bbox": [x, y, w, h],
    "score", "category_id", "category", "segmentation": RLE}]}``, each as in a
    COCO results file (``segmentation`` only when there are masks). Returns
    the path."""
    bboxes = instances.bboxes.tolist()
    scores = instances.scores.tolist()
    labels = instances.labels.tolist()
    masks = instances.masks if 'masks' in instances else None
    rows = []
    for i, ((x1, y1, x2, y2), score, label) in enumerate(zip(bboxes, scores, labels)):
        row = dict(bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                   score=round(score, 5), category_id=int(label))
        if classes is not None and 0 <= label < len(classes):
            row['category'] = classes[label]
        if masks is not None:
            rle = dict(masks[i])
            if isinstance(rle['counts'], bytes):
                rle['counts'] = rle['counts'].decode()
            row['segmentation'] = dict(size=[int(n) for n in rle['size']], counts=rle['counts'])
        rows.append(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(height=int(height), width=int(width),
                                    classes=list(classes) if classes is not None else None,
                                    instances=rows)))
    return path
