"""Parameters and multiply-adds of a UFO-ViT backbone or a full det/seg model.

Counted by ``ufo_mm.analysis.complexity`` (mmengine's ``FlopAnalyzer`` with
handles that count every matmul of the attention; see there). Convention:
mmengine's "flops" are multiply-accumulates. This tool prints **GMACs** (one
multiply-add = 1); the usual "GFLOPs" of papers such as XCiT's "GMACs @224" are
the same numbers, and FLOPs in the 2-per-multiply-add sense (torch's
FlopCounterMode, ``tools/benchmark.py``) are 2 x GMACs. Element-wise ops (GELU,
residual adds, the XNorm scaling) are not counted; LayerNorm and BatchNorm are,
as mmengine counts them (a few per element).

Usage:
    python tools/get_flops.py small_12_p16 --shape 224 224
    python tools/get_flops.py tiny_12_p8 --shape 1024 1024 --attn-type softmax
    python tools/get_flops.py configs/ufo_vit/mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-3x_coco.py \
        --shape 800 1344
    python tools/get_flops.py CONFIG --backbone-only
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from ufo_mm.analysis.complexity import analysis_target, complexity, report  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model', help='a UFO-ViT arch name (small_12_p16, t12_p8, ...) or an '
                                 'mmdet/mmseg config file')
    p.add_argument('--shape', type=int, nargs='+', default=[224, 224],
                   help='input H W (one value: square)')
    p.add_argument('--attn-type', default='ufo', choices=['ufo', 'softmax', 'xca'],
                   help='attention of an arch-name backbone')
    p.add_argument('--backbone-only', action='store_true',
                   help='with a config: count the backbone alone')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, key=value')
    args = p.parse_args(argv)
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2:
        p.error('--shape takes H W or one side')
    return args


def main(argv=None):
    args = parse_args(argv)
    H, W = args.shape
    torch.set_num_threads(1)
    model, inputs, what = analysis_target(args.model, (H, W), args.attn_type,
                                          args.backbone_only, args.cfg_options)
    with torch.no_grad():
        result = complexity(model, inputs)
    rows = [n for n, _ in model.named_children()
            if result['params_by_module'].get(n, 0) or result['macs_by_module'].get(n, 0)]
    print(f'{what}, input 1x3x{H}x{W}')
    print(report(result, rows))
    print(f'\nGMACs: multiply-adds, mmengine\'s "flops" convention '
          f'(2 x GMACs = {2 * result["macs"] / 1e9:.2f} GFLOPs in the 2-per-MAC sense).')
    if result['uncounted_ops']:
        print('Not counted (element-wise or data movement): '
              + ', '.join(sorted(op.replace('aten::', '') for op in result['uncounted_ops'])))
    return result


if __name__ == '__main__':
    main()
