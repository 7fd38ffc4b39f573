"""What ``tools/export_onnx.py`` exports for a config file or a UFOViT arch name.

- arch, or ``part='backbone'``: the UFOViT backbone, image -> feat0..feat3
  (strides 4, 8, 16, 32);
- mmseg config: normalised image -> logits (B, num_classes, H, W), see
  :class:`~ufo_mm.deploy.onnx_export.SegmentorLogits`;
- mmdet config: backbone + neck features (no heads, no NMS).
"""
import os.path as osp
from typing import Optional, Tuple

import torch.nn as nn

from .onnx_export import DetectorFeatures, SegmentorLogits

# max |onnx - torch| / max |torch| that a verified export may differ by
TOLERANCE = 1e-4


def build_backbone(arch: str, checkpoint: Optional[str] = None) -> nn.Module:
    """A UFOViT of ``arch`` (initialised, or any UFO-ViT/XCiT checkpoint
    converted on the fly), eval mode."""
    from ufo_mm.models import UFOViT
    from ufo_mm.models.checkpoint_convert import load_pretrained
    model = UFOViT(arch=arch)
    model.init_weights()
    if checkpoint is not None:
        load_pretrained(model, checkpoint)
    return model.eval()


def export_target(config_or_arch: str, checkpoint: Optional[str] = None,
                  part: str = 'auto') -> Tuple[nn.Module, dict]:
    """(module to export, metadata strings for the ONNX file).

    Raises:
        ValueError: an arch name with a part other than the backbone, or a
            config of neither mmdet nor mmseg.
        FileNotFoundError: the config file does not exist.
    """
    metadata = {'producer': 'ufo_mm tools/export_onnx.py', 'source': config_or_arch}
    if not config_or_arch.endswith('.py'):
        if part not in ('auto', 'backbone'):
            raise ValueError('an arch name exports the backbone only')
        metadata['exported'] = 'UFOViT backbone: feat0..feat3 at strides 4, 8, 16, 32'
        return build_backbone(config_or_arch, checkpoint), metadata
    if not osp.isfile(config_or_arch):
        raise FileNotFoundError(f'config {config_or_arch} not found')
    from ufo_mm.builder import build_model, library_of
    model = build_model(config_or_arch, checkpoint)
    if checkpoint is None:
        model.init_weights()
    cfg = model.cfg
    if part == 'backbone':
        metadata['exported'] = 'backbone: feature maps'
        return model.backbone, metadata
    preprocessor = cfg.model.get('data_preprocessor', {})
    for key in ('mean', 'std', 'bgr_to_rgb', 'rgb_to_bgr'):
        if key in preprocessor:
            metadata[f'preprocess_{key}'] = str(preprocessor[key])
    if library_of(cfg) == 'mmseg':
        metadata['exported'] = ('segmentor: normalised image -> logits (B, classes, H, W); '
                                'argmax over axis 1 gives the label map')
        if model.dataset_meta.get('classes'):
            metadata['classes'] = ','.join(model.dataset_meta['classes'])
        return SegmentorLogits(model), metadata
    metadata['exported'] = 'detector backbone + neck: feature maps (no heads, no NMS)'
    return DetectorFeatures(model), metadata
