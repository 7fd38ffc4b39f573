"""Export a UFO-ViT backbone, an mmseg segmentor or an mmdet detector's
backbone + neck to ONNX with dynamic height and width.

    python tools/export_onnx.py CONFIG_OR_ARCH --out model.onnx [--checkpoint CKPT]
                                [--shape H W] [--part auto|backbone] [--opset 17]
                                [--static-batch] [--verify H W [H W ...]]

CONFIG_OR_ARCH is an mmseg/mmdet config file (``.py``) or a UFOViT arch name
(``small_12_p16``, ``t12``, ...). What each exports (see ufo_mm/deploy/):

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

from ufo_mm.deploy.onnx_export import compare_onnx, export_onnx  # noqa: E402
from ufo_mm.deploy.targets import TOLERANCE, export_target  # noqa: E402


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
    try:
        module, metadata = export_target(args.config_or_arch, args.checkpoint, args.part)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f'error: {e}') from None
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
