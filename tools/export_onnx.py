"""Export a UFO-ViT backbone, an mmseg segmentor or an mmdet detector's
backbone + neck to ONNX with dynamic height and width.

    python tools/export_onnx.py CONFIG_OR_ARCH --out model.onnx [--checkpoint CKPT]
                                [--shape H W] [--part auto|backbone] [--opset 17]
                                [--static-batch] [--verify H W [H W ...]]

CONFIG_OR_ARCH is an mmseg/mmdet config file (``.py``) or a UFOViT arch name
(``small_12_p16``, ``t12``, ...). What each exports (see ufo_mm/export.py):

- arch, or ``--part backbone``: the UFOViT backbone, image -> feat0..feat3
  (strides 4, 8, 16, 32);
- mmseg config: normalised image -> logits (B, num_classes, H, W); UperNet's
  adaptive pooling is replaced by an exact, dynamically shaped equivalent;
- mmdet config: backbone + neck features (no heads, no NMS).

``--verify`` runs the file with onnxruntime at the given sizes and compares
with PyTorch (max |diff| / max |reference|); it fails above 1e-4.
"""
import argparse
import copy
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

import ufo_mm  # noqa: E402,F401  registers UFOViT, installs the safe checkpoint loader
from ufo_mm.export import (DetectorFeatures, SegmentorLogits, compare_onnx,  # noqa: E402
                           export_onnx)

TOLERANCE = 1e-4


def build_from_config(path: str, checkpoint=None):
    """(model in eval mode on CPU, library name, config) for an mmseg/mmdet config."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    cfg = Config.fromfile(path)
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise SystemExit(f"error: {path}: default_scope must be 'mmseg' or 'mmdet', got {scope!r}")
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if checkpoint is not None:
        # the checkpoint has the weights: skip pretrained backbone loading
        model_cfg.pop('pretrained', None)
        model_cfg.get('backbone', {}).pop('init_cfg', None)
    model = MODELS.build(model_cfg)
    if checkpoint is None:
        model.init_weights()
    else:
        load_checkpoint(model, checkpoint, map_location='cpu')
    return revert_sync_batchnorm(model).eval(), scope, cfg


def build_backbone(arch: str, checkpoint=None):
    from ufo_mm.models import UFOViT
    from ufo_mm.models.checkpoint_convert import load_pretrained
    model = UFOViT(arch=arch)
    model.init_weights()
    if checkpoint is not None:
        load_pretrained(model, checkpoint)
    return model.eval()


def export_module(args):
    """(module to export, metadata) for the command-line arguments."""
    metadata = {'producer': 'ufo_mm tools/export_onnx.py', 'source': args.config_or_arch}
    if not args.config_or_arch.endswith('.py'):
        if args.part not in ('auto', 'backbone'):
            raise SystemExit('error: an arch name exports the backbone only')
        metadata['exported'] = 'UFOViT backbone: feat0..feat3 at strides 4, 8, 16, 32'
        return build_backbone(args.config_or_arch, args.checkpoint), metadata
    if not osp.isfile(args.config_or_arch):
        raise SystemExit(f'error: config {args.config_or_arch} not found')
    model, scope, cfg = build_from_config(args.config_or_arch, args.checkpoint)
    if args.part == 'backbone':
        metadata['exported'] = 'backbone: feature maps'
        return model.backbone, metadata
    preprocessor = cfg.model.get('data_preprocessor', {})
    for key in ('mean', 'std', 'bgr_to_rgb', 'rgb_to_bgr'):
        if key in preprocessor:
            metadata[f'preprocess_{key}'] = str(preprocessor[key])
    if scope == 'mmseg':
        metadata['exported'] = ('segmentor: normalised image -> logits (B, classes, H, W); '
                                'argmax over axis 1 gives the label map')
        classes = getattr(model, 'dataset_meta', None) or {}
        if classes.get('classes'):
            metadata['classes'] = ','.join(classes['classes'])
        return SegmentorLogits(model), metadata
    metadata['exported'] = 'detector backbone + neck: feature maps (no heads, no NMS)'
    return DetectorFeatures(model), metadata


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config_or_arch', help='mmseg/mmdet config file or UFOViT arch name')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--checkpoint', help='weights (mmengine checkpoint; for an arch, any '
                        'UFO-ViT/XCiT checkpoint, converted on the fly)')
    parser.add_argument('--shape', nargs=2, type=int, default=(224, 320), metavar=('H', 'W'),
                        help='example input size that is traced (any size runs afterwards)')
    parser.add_argument('--part', choices=['auto', 'backbone'], default='auto',
                        help='auto: whole segmentor / detector backbone+neck; backbone: '
                        'UFOViT only')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--static-batch', action='store_true', help='fix the batch size to 1')
    parser.add_argument('--verify', nargs='+', type=int, metavar='H W',
                        help='sizes to check with onnxruntime against PyTorch')
    args = parser.parse_args(argv)
    if args.verify and len(args.verify) % 2:
        parser.error('--verify takes pairs H W')
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmengine.logging import MMLogger
    # init_weights logs every parameter at INFO: keep the output to the export.
    MMLogger.get_instance('ufo_export_onnx', log_level='WARNING')
    module, metadata = export_module(args)
    reference = copy.deepcopy(module) if args.verify else None  # keeps the original pools
    names = export_onnx(module, args.out, shape=args.shape, opset=args.opset,
                        dynamic_batch=not args.static_batch, metadata=metadata)
    print(f'wrote {args.out}: input (batch, 3, height, width) -> {", ".join(names)}; '
          f'{metadata["exported"]}')
    if args.verify:
        sizes = list(zip(args.verify[::2], args.verify[1::2]))
        results = compare_onnx(reference, args.out, [(1, h, w) for h, w in sizes])
        worst = max(r['rel_err'] for r in results)
        for r in results:
            print(f"  {r['input']} {r['output']} {r['shape']}: rel err {r['rel_err']:.2e}")
        if worst > TOLERANCE:
            raise SystemExit(f'error: ONNX and PyTorch differ by {worst:.2e} > {TOLERANCE}')
    return args.out


if __name__ == '__main__':
    main()
