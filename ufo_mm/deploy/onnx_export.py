"""ONNX export of UFO-ViT backbones and UperNet (or any mmseg EncoderDecoder)
segmentors with dynamic height and width.

What is exported (see docs/reliability.md):

- a bare :class:`~ufo_mm.models.UFOViT`: image (B, 3, H, W) -> its four
  feature maps at strides 4, 8, 16, 32, sizes ``ceil(H / s)``;
- an mmseg segmentor: normalised image (B, 3, H, W) -> class logits
  (B, num_classes, H, W): backbone, decode head (``model._forward``) and the
  final bilinear resize that mmseg's ``predict`` applies. Not exported: the
  data preprocessor (mean/std and channel order, written into the file's
  metadata), sliding-window inference, test-time augmentation, the auxiliary
  head (training only) and the argmax;
- an mmdet detector: backbone + neck features (``model.extract_feat``). The
  heads' box decoding, NMS and RoI operators (mmcv ops) are not exported; use
  mmdeploy for whole detectors.

UperNet's pyramid pooling module uses ``nn.AdaptiveAvgPool2d(s)`` for s in
(1, 2, 3, 6). The TorchScript ONNX exporter turns an adaptive pool into a fixed
``AvgPool`` computed from the export-time input size, or refuses it when the
input size is dynamic (mmseg PR#463, mmdeploy#658), so a plain export either
fails or silently gives wrong results at other resolutions.
:class:`AdaptiveAvgPool2dExportable` computes the same average over the same
bins (PyTorch's ``floor(i * H / s)`` to ``ceil((i + 1) * H / s)``) from a
cumulative sum and index lookups, which export with symbolic sizes;
:func:`replace_adaptive_pools` swaps it in for export.

The export uses the TorchScript-based exporter (``dynamo=False``): the
torch.export-based one needs the ``onnxscript`` package, which this
environment does not have. UFOViT's shape arithmetic (``ceil(H / s)`` crops,
the Fourier grid from ``cumsum``) traces into ONNX shape operations, so H and W
stay dynamic.
"""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'AdaptiveAvgPool2dExportable', 'replace_adaptive_pools', 'SegmentorLogits',
    'DetectorFeatures', 'export_onnx', 'compare_onnx'
]


def _bin_edges(size, bins: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Start (inclusive) and end (exclusive) of each adaptive-pooling bin along
    an axis of length ``size`` (an int, or a traced size in export)."""
    i = torch.arange(bins, device=device)
    start = torch.div(i * size, bins, rounding_mode='floor')
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode='floor')
    return start, end


def _adaptive_avg_1d(x: torch.Tensor, bins: int, dim: int) -> torch.Tensor:
    """Adaptive average pooling of ``x`` along ``dim`` into ``bins`` bins."""
    size = x.shape[dim]
    start, end = _bin_edges(size, bins, x.device)
    # Prefix sums with a leading zero: sum(x[a:b]) = S[b] - S[a].
    csum = torch.cumsum(x, dim=dim)
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [1, 0]
    csum = F.pad(csum, pad)
    total = csum.index_select(dim, end) - csum.index_select(dim, start)
    shape = [1] * x.dim()
    shape[dim] = bins
    return total / (end - start).to(x.dtype).reshape(shape)


class AdaptiveAvgPool2dExportable(nn.Module):
    """``nn.AdaptiveAvgPool2d`` with the same bins, exportable with dynamic sizes.

    Shape: (B, C, H, W) -> (B, C, out_h, out_w).
    """

    def __init__(self, output_size: Union[int, Tuple[int, int]]):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if any(s is None for s in output_size):
            raise ValueError('output_size None (keep the input size) is not supported')
        self.output_size = tuple(int(s) for s in output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h, out_w = self.output_size
        if out_h == 1 and out_w == 1:
            return x.mean(dim=(-2, -1), keepdim=True)
        return _adaptive_avg_1d(_adaptive_avg_1d(x, out_h, -2), out_w, -1)

    def extra_repr(self) -> str:
        return f'output_size={self.output_size}'


def replace_adaptive_pools(model: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` in ``model`` (in place) by
    :class:`AdaptiveAvgPool2dExportable`; returns how many were replaced."""
    count = 0
    for name, child in model.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(model, name, AdaptiveAvgPool2dExportable(child.output_size))
            count += 1
        else:
            count += replace_adaptive_pools(child)
    return count


class SegmentorLogits(nn.Module):
    """Tensor forward of an mmseg segmentor: normalised image -> logits at the
    input resolution (backbone, decode head, bilinear resize as in mmseg's
    ``predict``). Shape: (B, 3, H, W) -> (B, num_classes, H, W)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor
        self.align_corners = segmentor.decode_head.align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.segmentor._forward(x)
        return F.interpolate(logits, size=x.shape[-2:], mode='bilinear',
                             align_corners=self.align_corners)


class DetectorFeatures(nn.Module):
    """Backbone + neck of an mmdet detector: (B, 3, H, W) -> feature maps."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.detector.extract_feat(x))


def _output_names(module: nn.Module, example: torch.Tensor) -> List[str]:
    with torch.no_grad():
        out = module(example)
    if isinstance(out, torch.Tensor):
        return ['logits']
    return [f'feat{i}' for i in range(len(out))]


def export_onnx(module: nn.Module, out_file: str, shape: Sequence[int] = (224, 320),
                opset: int = 17, dynamic_batch: bool = True,
                metadata: Optional[Dict[str, str]] = None) -> List[str]:
    """Export ``module`` (eval mode, tensor in, tensor(s) out) with dynamic H, W.

    Args:
        module: e.g. a UFOViT, :class:`SegmentorLogits` or
            :class:`DetectorFeatures`; adaptive pools are replaced in place.
        out_file: the .onnx file to write.
        shape: (H, W) of the example input that is traced; any size works
            afterwards.
        opset: ONNX opset.
        dynamic_batch: also make the batch size dynamic. The example then
            has 2 images, so that batch-size-specific code paths (UFO
            attention takes a faster one for a single image) are traced in
            their general form.
        metadata: strings stored as the model's metadata_props.

    Returns:
        The output names (``feat0..feat3`` for feature pyramids, ``logits``).
    """
    import onnx

    module = module.eval()
    replace_adaptive_pools(module)
    example = torch.randn(2 if dynamic_batch else 1, 3, *shape)
    names = _output_names(module, example)
    axes = {'input': {2: 'height', 3: 'width'}}
    for i, name in enumerate(names):
        axes[name] = {2: f'{name}_height', 3: f'{name}_width'}
    if dynamic_batch:
        for name in axes:
            axes[name][0] = 'batch'
    with warnings.catch_warnings():
        # Shape checks in Python become constants in the trace: expected here.
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        torch.onnx.export(module, (example,), out_file, input_names=['input'],
                          output_names=names, dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    model = onnx.load(out_file)
    onnx.checker.check_model(model)
    if metadata:
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(model, out_file)
    return names


def compare_onnx(module: nn.Module, onnx_file: str,
                 shapes: Sequence[Tuple[int, int, int]]) -> List[dict]:
    """Run ``onnx_file`` with onnxruntime and ``module`` with PyTorch on random
    inputs of each (B, H, W) in ``shapes``.

    Returns one dict per shape and output: shape, output name, output shape,
    ``rel_err`` = max |onnx - torch| / max |torch|, and ``shape_ok``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    module = module.eval()
    results = []
    generator = torch.Generator().manual_seed(0)
    for b, h, w in shapes:
        x = torch.randn(b, 3, h, w, generator=generator)
        with torch.no_grad():
            ref = module(x)
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        outs = session.run(None, {'input': x.numpy()})
        for name, r, o in zip(names, ref, outs):
            r = r.numpy()
            ok = r.shape == o.shape
            err = float(np.abs(r - o).max() / max(np.abs(r).max(), 1e-12)) if ok else float('inf')
            results.append(dict(input=(b, 3, h, w), output=name, shape=tuple(o.shape),
                                rel_err=err, shape_ok=ok))
    return results
