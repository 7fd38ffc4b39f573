"""Parameters and multiply-adds of a UFO-ViT backbone or a full det/seg model.

Counted by mmengine's complexity analysis (``mmengine.analysis.FlopAnalyzer``,
a jit trace of one forward), with extra operator handles so that every matmul
of the attention is counted: broadcasting ``aten::matmul`` (the per-head
k^T v and the folding of key-values into the output projection), ``aten::bmm``
and ``aten::baddbmm`` (batched UFO attention), and
``aten::scaled_dot_product_attention`` (the softmax ablation), none of which
mmengine's default handles count correctly.

Convention: mmengine's "flops" are multiply-accumulates. This tool prints
**GMACs** (one multiply-add = 1); the usual "GFLOPs" of papers such as XCiT's
"GMACs @224" are the same numbers, and FLOPs in the 2-per-multiply-add sense
(torch's FlopCounterMode, ``tools/benchmark.py``) are 2 x GMACs. Element-wise
ops (GELU, residual adds, the XNorm scaling) are not counted; LayerNorm and
BatchNorm are, as mmengine counts them (a few per element).

Usage:
    python tools/get_flops.py small_12_p16 --shape 224 224
    python tools/get_flops.py tiny_12_p8 --shape 1024 1024 --attn-type softmax
    python tools/get_flops.py configs/ufo_vit/mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-3x_coco.py \
        --shape 800 1344
    python tools/get_flops.py CONFIG --backbone-only
"""
import argparse
import math
import os.path as osp
import sys
from functools import partial
from typing import Any, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from mmengine.analysis import FlopAnalyzer, parameter_count  # noqa: E402
from mmengine.analysis.jit_handles import get_shape  # noqa: E402


# ----------------------------------------------------------------- operator handles (MACs)
def _broadcast_batch(a: List[int], b: List[int]) -> int:
    return math.prod(torch.broadcast_shapes(tuple(a), tuple(b)))


def matmul_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::matmul``/``aten::mm`` with numpy broadcasting of the batch dims
    (mmengine's default takes the first operand's batch only)."""
    a, b = (get_shape(v) for v in inputs[:2])
    if len(a) == 1:
        a = [1, a[0]]
    if len(b) == 1:
        b = [b[0], 1]
    assert a[-1] == b[-2], (a, b)
    return _broadcast_batch(a[:-2], b[:-2]) * a[-2] * a[-1] * b[-1]


def bmm_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::bmm(a, b)``: (n, m, k) @ (n, k, p)."""
    a, b = (get_shape(v) for v in inputs[:2])
    return a[0] * a[1] * a[2] * b[2]


def baddbmm_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::baddbmm(c, a, b)``: c + (n, m, k) @ (n, k, p); the add is not counted."""
    return bmm_macs(inputs[1:3], outputs)


def sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::scaled_dot_product_attention(q, k, v)``: q k^T and attn @ v."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = _broadcast_batch(q[:-2], k[:-2])
    L, E = q[-2], q[-1]
    S, Ev = k[-2], v[-1]
    return batch * L * S * (E + Ev)


EXTRA_HANDLES = {
    'aten::matmul': matmul_macs,
    'aten::mm': matmul_macs,
    'aten::bmm': bmm_macs,
    'aten::baddbmm': baddbmm_macs,
    'aten::scaled_dot_product_attention': sdpa_macs,
}


def flop_analyzer(model: torch.nn.Module, inputs: tuple) -> FlopAnalyzer:
    """mmengine's FlopAnalyzer with the handles above, warnings about the
    (uncounted) element-wise operators silenced."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**EXTRA_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


def complexity(model: torch.nn.Module, inputs: tuple) -> dict:
    """Parameters and MACs of ``model(*inputs)``, total and per module.

    Returns:
        dict with ``params`` and ``macs`` (ints), ``params_by_module`` and
        ``macs_by_module`` (module name -> int, '' is the whole model),
        ``macs_by_operator`` (aten op -> int) and ``uncounted_ops`` (op -> calls).
    """
    analyzer = flop_analyzer(model, inputs)
    by_module = analyzer.by_module()
    return dict(params=parameter_count(model)[''], macs=analyzer.total(),
                params_by_module=dict(parameter_count(model)), macs_by_module=dict(by_module),
                macs_by_operator=dict(analyzer.by_operator()),
                uncounted_ops=dict(analyzer.unsupported_ops()))


# ----------------------------------------------------------------------------- models
def build_backbone(arch: str, attn_type: str = 'ufo'):
    from ufo_mm.models import UFOViT
    model = UFOViT(arch=arch, attn_type=attn_type)
    model.eval()
    return model


def build_from_config(path: str, cfg_options=None):
    """The model of an mmdet/mmseg config (SyncBN reverted to BN), eval mode, and
    its default scope."""
    import ufo_mm  # noqa: F401  registers UFOViT
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    cfg.model.pop('pretrained', None)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.eval()
    return model, scope


def full_model_inputs(model, scope: str, H: int, W: int):
    """``(inputs,)`` and a tensor-mode forward (what mmdet's/mmseg's get_flops
    trace: backbone, neck and heads, no post-processing)."""
    x = torch.randn(1, 3, H, W)
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W),
                                             pad_shape=(H, W), padding_size=[0] * 4))
    else:
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W),
                                             pad_shape=(H, W), batch_input_shape=(H, W),
                                             scale_factor=(1., 1.)))
    model.forward = partial(model.forward, data_samples=[sample], mode='tensor')
    return (x,)


def fmt_count(n: float, unit: float) -> str:
    return f'{n / unit:.3f}' if n < 10 * unit else f'{n / unit:.2f}'


def report(result: dict, rows: List[str]) -> str:
    """A small table: one line per named module, then the total."""
    lines = [f'{"module":28s} {"params (M)":>11s} {"GMACs":>10s}']
    for name in rows:
        lines.append(f'{name:28s} {fmt_count(result["params_by_module"].get(name, 0), 1e6):>11s} '
                     f'{fmt_count(result["macs_by_module"].get(name, 0), 1e9):>10s}')
    lines.append(f'{"total":28s} {fmt_count(result["params"], 1e6):>11s} '
                 f'{fmt_count(result["macs"], 1e9):>10s}')
    return '\n'.join(lines)


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
    if args.model.endswith('.py'):
        if not osp.exists(args.model):
            raise FileNotFoundError(f'config not found: {args.model}')
        model, scope = build_from_config(args.model, args.cfg_options)
        if args.backbone_only:
            model, inputs = model.backbone, (torch.randn(1, 3, H, W),)
        else:
            inputs = full_model_inputs(model, scope, H, W)
        what = f'{osp.basename(args.model)}' + (' (backbone)' if args.backbone_only else '')
    else:
        model, inputs = build_backbone(args.model, args.attn_type), (torch.randn(1, 3, H, W),)
        what = f'UFOViT {args.model} attn_type={args.attn_type}'
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
