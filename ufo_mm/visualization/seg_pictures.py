"""Pictures of semantic segmentation results: image | ground truth | prediction.

Reusable pieces for demos and tools (``tools/seg_pictures.py``,
``tools/eval_resolutions.py``)::

    from ufo_mm.visualization.seg_pictures import load_segmentor, write_seg_pictures, split_files
    model = load_segmentor('configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py', 'iter_2000.pth')
    pairs = split_files(model.cfg.test_dataloader.dataset, num=8)
    write_seg_pictures(model, pairs, 'work_dirs/pictures')

Each picture is one PNG: the input image, the ground-truth label map and the
predicted label map side by side, coloured with the dataset palette (ignored
pixels black), with a title row and a legend of the classes below.
"""
import os.path as osp
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .overlays import colour_labels

TITLES = ('image', 'ground truth', 'prediction')


def _text_row(width: int, height: int, texts: Sequence[Tuple[str, int, tuple]]) -> np.ndarray:
    """White strip with black texts at x offsets; optional colour box before each."""
    row = np.full((height, width, 3), 255, np.uint8)
    scale = height / 40
    for text, x, box in texts:
        if box is not None:
            side = int(height * 0.6)
            y0 = (height - side) // 2
            cv2.rectangle(row, (x, y0), (x + side, y0 + side), tuple(int(c) for c in box), -1)
            cv2.rectangle(row, (x, y0), (x + side, y0 + side), (0, 0, 0), 1)
            x += side + max(2, side // 3)
        cv2.putText(row, text, (x, int(height * 0.7)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), max(1, round(scale * 1.5)), cv2.LINE_AA)
    return row


def _legend(width: int, palette, class_names, row_height: int) -> np.ndarray:
    """Rows of (colour box, class name) entries filling ``width``."""
    scale = row_height / 40
    entries, rows, x = [], [], 4
    for colour, name in zip(palette, class_names):
        (tw, _), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                     max(1, round(scale * 1.5)))
        w = int(row_height * 0.8) + tw + row_height // 2
        if x + w > width and entries:
            rows.append(_text_row(width, row_height, entries))
            entries, x = [], 4
        entries.append((name, x, colour))
        x += w
    if entries:
        rows.append(_text_row(width, row_height, entries))
    return np.concatenate(rows) if rows else np.zeros((0, width, 3), np.uint8)


def side_by_side(img: np.ndarray, gt: Optional[np.ndarray], pred: np.ndarray,
                 palette: Sequence[Sequence[int]], class_names: Optional[Sequence[str]] = None,
                 ignore_index: int = 255, max_height: Optional[int] = 512,
                 titles: Sequence[str] = TITLES) -> np.ndarray:
    """One RGB picture: ``img`` (H, W, 3) RGB | ``gt`` (H, W) | ``pred`` (H, W).

    ``gt`` may be None (no annotation): that panel is left out. Pictures taller
    than ``max_height`` are shrunk (labels with nearest-neighbour) so that 2048
    pixel inputs stay viewable. A title row goes on top and, when
    ``class_names`` is given, a legend of the palette below.
    """
    h, w = pred.shape
    if img.shape[:2] != (h, w) or (gt is not None and gt.shape != (h, w)):
        raise ValueError(f'image {img.shape[:2]}, ground truth '
                         f'{None if gt is None else gt.shape} and prediction {pred.shape} '
                         'must have the same size')
    panels = [img, colour_labels(pred, palette, ignore_index)]
    names = [titles[0], titles[2]]
    if gt is not None:
        panels.insert(1, colour_labels(gt, palette, ignore_index))
        names.insert(1, titles[1])
    if max_height is not None and h > max_height:
        size = (max(1, round(w * max_height / h)), max_height)
        panels = [cv2.resize(p, size, interpolation=cv2.INTER_AREA if i == 0 else
                             cv2.INTER_NEAREST) for i, p in enumerate(panels)]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    body = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    row_height = int(np.clip(body.shape[0] / 8, 16, 32))
    step = panels[0].shape[1] + gap.shape[1]
    title = _text_row(body.shape[1], row_height, [(t, i * step + 4, None)
                                                 for i, t in enumerate(names)])
    parts = [title, body]
    if class_names is not None:
        parts.append(_legend(body.shape[1], palette, class_names, row_height))
    return np.concatenate(parts)


def load_label(path, reduce_zero_label: bool = False, ignore_index: int = 255) -> np.ndarray:
    """Read a PNG label map as mmseg's ``LoadAnnotations`` does: with
    ``reduce_zero_label`` 0 becomes ``ignore_index`` and every other label
    ``i`` becomes ``i - 1``."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise FileNotFoundError(f'cannot read label map {path}')
    label = label.astype(np.int64)
    if reduce_zero_label:
        label = np.where(label == 0, ignore_index, label - 1)
        label[label == ignore_index - 1] = ignore_index
    return label


def split_files(dataset_cfg, num: Optional[int] = None) -> List[Tuple[Path, Optional[Path]]]:
    """``(image, label map or None)`` paths of a dataset config (as in
    ``cfg.test_dataloader.dataset``: ``data_root``, ``data_prefix``,
    ``img_suffix``, ``seg_map_suffix``), sorted, the first ``num``."""
    root = Path(dataset_cfg.get('data_root') or '')
    prefix = dataset_cfg.get('data_prefix', {})
    img_dir = root / prefix.get('img_path', '')
    seg_dir = root / prefix.get('seg_map_path', '')
    img_suffix = dataset_cfg.get('img_suffix', '.jpg')
    seg_suffix = dataset_cfg.get('seg_map_suffix', '.png')
    imgs = sorted(img_dir.glob(f'*{img_suffix}'))
    if not imgs:
        raise FileNotFoundError(f'no *{img_suffix} images in {img_dir}')
    pairs = []
    for img in imgs[:num]:
        seg = seg_dir / (img.name[:-len(img_suffix)] + seg_suffix)
        pairs.append((img, seg if seg.is_file() else None))
    return pairs


def load_segmentor(config, checkpoint: Optional[str] = None, device: str = 'cpu',
                   cfg_options: Optional[dict] = None):
    """The segmentor of an mmseg config with its checkpoint
    (:func:`ufo_mm.builder.build_model`: SyncBN turned into BN,
    ``model.cfg`` and ``model.dataset_meta`` set)."""
    from ufo_mm.builder import build_model, library_of
    model = build_model(config, checkpoint, device=device, cfg_options=cfg_options)
    if library_of(model.cfg) != 'mmseg':
        raise ValueError(f'{config} is not an mmseg config')
    return model


def predict(model, img_path) -> np.ndarray:
    """(H, W) int64 predicted labels of one image at its original size."""
    from mmseg.apis import inference_model
    result = inference_model(model, str(img_path))
    return result.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)


def write_seg_pictures(model, pairs, out_dir, palette=None, class_names=None,
                       reduce_zero_label: Optional[bool] = None,
                       max_height: Optional[int] = 512) -> List[Path]:
    """Predict each ``(image, label map or None)`` pair and write
    ``out_dir/<image stem>.png``; returns the written paths.

    ``palette``, ``class_names`` default to ``model.dataset_meta``;
    ``reduce_zero_label`` to the model config's test dataset setting.
    """
    meta = getattr(model, 'dataset_meta', None) or {}
    palette = palette if palette is not None else meta.get('palette')
    class_names = class_names if class_names is not None else meta.get('classes')
    if palette is None:
        raise ValueError('no palette: pass one or load a checkpoint with dataset_meta')
    if reduce_zero_label is None:
        reduce_zero_label = bool(model.cfg.test_dataloader.dataset.get('reduce_zero_label', False))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for img_path, seg_path in pairs:
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f'cannot read image {img_path}')
        gt = None if seg_path is None else load_label(seg_path, reduce_zero_label)
        pred = predict(model, img_path)
        picture = side_by_side(img[..., ::-1], gt, pred, palette, class_names,
                               max_height=max_height)
        path = out_dir / (osp.splitext(Path(img_path).name)[0] + '.png')
        cv2.imwrite(str(path), picture[..., ::-1])
        written.append(path)
    return written
