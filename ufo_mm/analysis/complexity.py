"""Parameters and multiply-adds (MACs) of a UFO-ViT backbone or a full det/seg model.

Counted by mmengine's complexity analysis (``mmengine.analysis.FlopAnalyzer``,
a jit trace of one forward), with extra operator handles so that every matmul
of the attention is counted: broadcasting ``aten::matmul`` (the per-head
k^T v and the folding of key-values into the output projection), ``aten::bmm``
and ``aten::baddbmm`` (batched UFO attention), and
``aten::scaled_dot_product_attention`` (the softmax ablation), none of which
mmengine's default handles count correctly.

Convention: mmengine's "flops" are multiply-accumulates, and so are the counts
here (one multiply-add = 1); FLOPs in the 2-per-multiply-add sense (torch's
FlopCounterMode, ``ufo_mm.benchmark``) are 2 x MACs. Element-wise ops (GELU,
residual adds, the XNorm scaling) are not counted; LayerNorm and BatchNorm are,
as mmengine counts them (a few per element). ``tools/get_flops.py`` is the
command line.
"""
import math
import os.path as osp
from functools import partial
from typing import Any, List, Optional, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape


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
    """A UFOViT of ``arch`` with ``attn_type`` attention, eval mode."""
    from ufo_mm.models import UFOViT
    model = UFOViT(arch=arch, attn_type=attn_type)
    model.eval()
    return model


def full_model_inputs(model, scope: str, H: int, W: int):
    """``(inputs,)`` and a tensor-mode forward (what mmdet's/mmseg's get_flops
    trace: backbone, neck and heads, no post-processing)."""
    from ufo_mm.builder import blank_data_sample
    sample = blank_data_sample(scope, H, W)
    model.forward = partial(model.forward, data_samples=[sample], mode='tensor')
    return (torch.randn(1, 3, H, W),)


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


def analysis_target(model: str, shape: Tuple[int, int], attn_type: str = 'ufo',
                    backbone_only: bool = False, cfg_options: Optional[dict] = None):
    """(model, inputs, description) for ``model``: a UFO-ViT arch name, or an
    mmdet/mmseg config file (whole model in tensor mode, or its backbone)."""
    H, W = shape
    x = torch.randn(1, 3, H, W)
    if not model.endswith('.py'):
        return (build_backbone(model, attn_type), (x,),
                f'UFOViT {model} attn_type={attn_type}')
    if not osp.exists(model):
        raise FileNotFoundError(f'config not found: {model}')
    from ufo_mm.builder import build_model, library_of
    built = build_model(model, cfg_options=cfg_options)
    what = osp.basename(model) + (' (backbone)' if backbone_only else '')
    if backbone_only:
        return built.backbone, (x,), what
    return built, full_model_inputs(built, library_of(built.cfg), H, W), what
