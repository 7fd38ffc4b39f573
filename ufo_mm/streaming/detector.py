"""``StreamingMaskRCNN``: mmdet's ``MaskRCNN`` with one more test mode,
``test_cfg.mode='stream'``: whole-image detection whose backbone, FPN and RPN
head are computed in bands (:mod:`.bands`), so no stride-4 map of the backbone
and no RPN intermediate is ever formed whole. What is held whole is what the
RoI heads read: the FPN levels (256 x H/4 x W/4 floats and the coarser ones)
and the RPN's outputs (a few channels per level). mmdet's own RPN
post-processing, box head and mask head then run unchanged on them, so the
detections are those of mode 'whole'. mmdet's ``tools/test.py`` evaluates
with it::

    model = dict(type='StreamingMaskRCNN',
                 test_cfg=dict(mode='stream', band_rows=None, tokens_per_band=None,
                               token_dtype=None, token_device='auto', mask_format='bitmap',
                               rpn=..., rcnn=...))

``mask_format='rle'`` gives each instance's mask as a COCO RLE (what mmdet's
``CocoMetric`` accepts and writes) pasted one instance at a time, instead of
mmdet's (instances, H, W) booleans, which large images cannot afford (100
instances of an 8192 x 8192 image are 6.7 GB). Training and mode 'whole' are
mmdet's, unchanged; the state dict is MaskRCNN's.
"""
from typing import Callable, List, Optional

import numpy as np
import torch
from mmdet.models.detectors import MaskRCNN
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
from mmdet.structures.bbox import bbox2roi
from pycocotools import mask as mask_util

from . import bands, heads
from .backbone import StreamedUFOViT
from .inputs import DETECTOR, Progress, StreamConfig, array_source, stream_config, tensor_source

#: bytes of one band of the finest FPN level (the band height follows from it)
FEATURE_BAND_BYTES = 64 << 20


def stream_features(detector, image: bands.Node, channels: int, cfg: StreamConfig,
                    progress: Optional[Callable[[int, int], None]] = None):
    """(FPN levels, RPN objectness per level, RPN box deltas per level) of
    ``image`` (a band node of normalised pixels): the tensors mmdet's
    ``extract_feat`` and ``rpn_head.forward`` give, computed in bands of
    ``cfg.band_rows`` rows of the finest level (default: 64 MB of it), the
    backbone's tokens as ``cfg.tokens_per_band``, ``cfg.token_dtype`` and
    ``cfg.token_device`` say (:class:`.backbone.StreamedUFOViT`).
    ``progress(done, total)``: called as the work advances."""
    streamed = StreamedUFOViT(detector.backbone, cfg.tokens_per_band,
                              token_dtype=cfg.token_dtype, token_device=cfg.token_device)
    name = type(detector.neck).__name__ if detector.with_neck else None
    if name != 'FPN':
        raise NotImplementedError(f'neck {name} does not stream; supported: FPN')
    heads.check_eval(detector.neck)
    finest = streamed.m.pyramid_sizes(image.size)[0]
    band_rows = cfg.band_rows
    if band_rows is None:
        band_rows = max(1, FEATURE_BAND_BYTES // (4 * detector.neck.out_channels * finest[1]))
    counter = Progress(streamed.work(image.size) + -(-finest[0] // band_rows), progress)
    streamed.tick = counter.tick
    try:
        levels = heads.fpn_neck(detector.neck, streamed(image, channels))
        scores, deltas = heads.rpn_head(detector.rpn_head, levels)
        with torch.no_grad():
            out = bands.collect(levels + scores + deltas, band_rows,
                                progress=lambda done, total: counter.tick())
    finally:
        streamed.close()  # the token files of token_device 'disk'
    n = len(levels)
    return out[:n], out[n:2 * n], out[2 * n:]


def column_strip_rle(crop: np.ndarray, rows: slice, cols: slice, height: int,
                     width: int) -> dict:
    """The COCO RLE of a ``height`` x ``width`` mask that is zero except for
    ``crop`` (booleans) at ``[rows, cols]``: equal to pycocotools' encoding of
    the whole mask, made from the columns the crop spans only (RLE runs go
    down the columns, so the columns left and right of it are two zero runs)."""
    y0, x0 = rows.start, cols.start
    strip = np.zeros((height, crop.shape[1]), dtype=np.uint8)
    strip[y0:y0 + crop.shape[0]] = crop
    flat = strip.ravel(order='F')
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)  # RLE counts start with a run of zeros
    if not runs:
        runs = [0]
    runs[0] += x0 * height
    after = (width - x0 - crop.shape[1]) * height
    if len(runs) % 2:  # the last run is zeros
        runs[-1] += after
    elif after:
        runs.append(after)
    rle = mask_util.frPyObjects({'counts': runs, 'size': [height, width]}, height, width)
    return rle


def masks_as_rle(mask_head, mask_preds: torch.Tensor, results, img_meta: dict,
                 rcnn_test_cfg, rescale: bool) -> List[dict]:
    """What ``FCNMaskHead._predict_by_feat_single`` computes (mmdet 3.x: the
    same scale, sigmoid, class pick, paste and threshold, instance by
    instance, as it does on the CPU), each instance encoded as COCO RLE
    without forming the (instances, H, W) map."""
    bboxes, labels = results.bboxes, results.labels
    scale = bboxes.new_tensor(img_meta['scale_factor']).repeat((1, 2))
    img_h, img_w = img_meta['ori_shape'][:2]
    if rescale:
        bboxes /= scale  # in place, as mmdet does: results.bboxes end up rescaled
    else:
        img_h = int(np.round(img_h * scale[0, 1].item()))
        img_w = int(np.round(img_w * scale[0, 0].item()))
    threshold = rcnn_test_cfg.mask_thr_binary
    if threshold < 0:
        raise ValueError('mask_format rle needs binary masks (rcnn.mask_thr_binary >= 0), '
                         f'got mask_thr_binary={threshold}')
    probs = mask_preds.sigmoid()
    if not mask_head.class_agnostic:
        probs = probs[range(len(probs)), labels][:, None]
    rles = []
    for i in range(len(probs)):
        crop, (rows, cols) = _do_paste_mask(probs[i:i + 1], bboxes[i:i + 1], img_h, img_w,
                                            skip_empty=True)
        crop = (crop[0] >= threshold).cpu().numpy()
        rles.append(column_strip_rle(crop, rows, cols, img_h, img_w))
    return rles


class StreamingMaskRCNN(MaskRCNN):
    """MaskRCNN whose ``test_cfg.mode`` may also be 'stream' (UFOViT
    backbone, FPN neck, RPNHead; any RoI head mmdet's ``StandardRoIHead``
    API serves). The keys of ``test_cfg`` are read and checked by
    :func:`.inputs.stream_config`."""

    def predict(self, batch_inputs: torch.Tensor, batch_data_samples, rescale: bool = True):
        cfg = stream_config(self.test_cfg, DETECTOR)
        if cfg is None:
            return super().predict(batch_inputs, batch_data_samples, rescale)
        for i, sample in enumerate(batch_data_samples):
            source = tensor_source(batch_inputs[i:i + 1], self.backbone.check_finite)
            self.predict_one(source, batch_inputs.shape[1], sample, cfg, rescale)
        return batch_data_samples

    def predict_one(self, image: bands.Node, channels: int, sample, cfg: StreamConfig,
                    rescale: bool = True, progress=None):
        """Detections of one image (a band node of normalised pixels) into
        ``sample.pred_instances``, as ``predict`` in mode stream with the
        options ``cfg`` (whatever ``self.test_cfg`` says)."""
        feats, scores, deltas = stream_features(self, image, channels, cfg, progress)
        if sample.get('proposals', None) is None:
            proposals = self.rpn_head.predict_by_feat(scores, deltas,
                                                      batch_img_metas=[sample.metainfo],
                                                      rescale=False)
        else:
            proposals = [sample.proposals]
        del scores, deltas
        if cfg.mask_format == 'rle' and self.roi_head.with_mask:
            results = self._predict_rle(feats, proposals, sample, rescale)
        else:
            results = self.roi_head.predict(feats, proposals, [sample], rescale=rescale)
        self.add_pred_to_datasample([sample], results)
        return sample

    def _predict_rle(self, feats: List[torch.Tensor], proposals, sample, rescale: bool):
        """``StandardRoIHead.predict`` with the masks as RLE; the features
        are dropped before the masks are pasted."""
        roi = self.roi_head
        metas = [sample.metainfo]
        results = roi.predict_bbox(feats, metas, proposals, rcnn_test_cfg=roi.test_cfg,
                                   rescale=False)  # the mask step rescales, as in mmdet
        rois = bbox2roi([r.bboxes for r in results])
        if rois.shape[0] == 0:
            return roi.predict_mask(feats, metas, results, rescale=rescale)
        mask_preds = roi._mask_forward(feats, rois)['mask_preds']
        feats.clear()
        results[0].masks = masks_as_rle(roi.mask_head, mask_preds, results[0], metas[0],
                                        roi.test_cfg, rescale)
        return results


def detect_large(model, image_bgr: np.ndarray, band_rows: Optional[int] = None,
                 progress: Optional[Callable[[int, int], None]] = None,
                 tokens_per_band: Optional[int] = None,
                 token_dtype: Optional[torch.dtype] = None, token_device=None):
    """Detections (mmdet's ``InstanceData``: bboxes, scores, labels, and the
    masks as COCO RLE) of ``image_bgr`` ((H, W, 3) uint8, BGR as mmdet's
    ``LoadImageFromFile`` gives), at its own size, by a
    :class:`StreamingMaskRCNN` (e.g. from ``mmdet.apis.init_detector``).
    The same detections as mode stream (and, up to float rounding, whole) on
    the unresized image; the normalised image is made band by band, never
    whole (see docs/large_images.md). On a GPU the bands are computed there
    (mmdet's RoI heads need mmcv's CUDA ops then). ``model.test_cfg`` is
    neither read nor changed: the options are the arguments."""
    from mmdet.structures import DetDataSample
    if not isinstance(model, StreamingMaskRCNN):
        raise TypeError(f'detect_large needs a StreamingMaskRCNN, got {type(model).__name__}')
    model.eval()
    source, padded = array_source(image_bgr, model.data_preprocessor,
                                  next(model.parameters()).device)
    H, W = image_bgr.shape[:2]
    sample = DetDataSample(metainfo=dict(
        img_shape=(H, W), ori_shape=(H, W), pad_shape=padded, batch_input_shape=padded,
        scale_factor=(1.0, 1.0)))
    cfg = StreamConfig(band_rows=band_rows, tokens_per_band=tokens_per_band,
                       token_dtype=token_dtype, token_device=token_device, mask_format='rle')
    with torch.no_grad():
        model.predict_one(source, image_bgr.shape[2], sample, cfg, rescale=True,
                          progress=progress)
    return sample.pred_instances
