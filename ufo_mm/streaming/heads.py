"""mmseg's necks and decode heads, and mmdet's FPN and RPN head, as band
graphs (:mod:`.bands`), read off the modules themselves: their weights, their
``align_corners``, the sizes their ``forward`` resizes to. The graphs follow
each ``forward`` line by line (mmseg 1.x: ``UPerHead._forward_feature``, ``FPNHead.forward``,
``FPN.forward``; mmdet 3.x: ``FPN.forward``, which is mmseg's, and
``RPNHead.forward_single``), so the values are those of the whole-map forward.

Global parts are computed first: UperNet's pyramid pooling averages the
whole stride-32 map once, walking it in bands (:func:`pyramid_pooling`);
what follows it runs in bands. A head the module cannot be matched to raises
``NotImplementedError`` naming it.
"""
from typing import List

import torch.nn as nn
import torch.nn.functional as F

from . import bands

SUPPORTED_HEADS = ('UPerHead', 'FPNHead')
SUPPORTED_NECKS = ('FPN',)


def _check_eval(module: nn.Module):
    if module.training:
        raise RuntimeError(f'streamed inference needs eval mode; {type(module).__name__} is '
                           'training')


def _selected(head, feats: List[bands.Node]) -> List[bands.Node]:
    """``BaseDecodeHead._transform_inputs`` for 'multiple_select' (the heads here)."""
    if head.input_transform != 'multiple_select':
        raise NotImplementedError(f'{type(head).__name__} with input_transform='
                                  f'{head.input_transform!r}: only multiple_select streams')
    return [feats[i] for i in head.in_index]


def _classify(head, feat: bands.Node) -> bands.Node:
    """``cls_seg``: dropout (identity at test) and the 1x1 ``conv_seg``."""
    return bands.Conv(head.conv_seg, feat)


#: bytes of one band of the stride-32 map when its pyramid pooling walks it
POOLING_BAND_BYTES = 16 << 20


def pyramid_pooling(head, top: bands.Node) -> bands.Node:
    """UPerHead's ``psp_forward`` on the stride-32 map ``top``. Each
    branch's adaptive average pooling over the whole map is computed at once,
    when the graph is built, in one walk over ``top`` in bands
    (:func:`.bands.adaptive_avg_pool`: the map is never held whole, nor are
    the token rows it comes from), and its 1x1 ConvModule on the small pooled
    map; the results are held. Their bilinear resize back to the map's size,
    the concatenation with the map and the 3x3 bottleneck run in bands, so no
    (channels x H/32 x W/32) map of the branches is formed whole either (at
    65536 px one is 2^31 elements, past what CUDA's bilinear upsampling
    indexes)."""
    ppm = head.psp_modules
    sizes = [(s, s) if isinstance(s, int) else tuple(s) for s in ppm.pool_scales]
    rows = max(1, POOLING_BAND_BYTES // (4 * head.in_channels[-1] * top.width))
    pooled = bands.adaptive_avg_pool(top, sizes, rows)
    parts = [top]
    for branch, x in zip(ppm, pooled):
        conv = branch[1:]  # the branch after its nn.AdaptiveAvgPool2d
        parts.append(bands.Resize(bands.Tensor(conv(x)), size=top.size, mode='bilinear',
                                  align_corners=ppm.align_corners))
    return bands.module_node(head.bottleneck, bands.cat(*parts))


def uper_head(head, feats: List[bands.Node]) -> bands.Node:
    """UPerHead's logits (B, num_classes, H/4, W/4) as a node."""
    inputs = _selected(head, feats)
    ac = head.align_corners
    laterals = [bands.module_node(conv, inputs[i]) for i, conv in enumerate(head.lateral_convs)]
    laterals.append(pyramid_pooling(head, inputs[-1]))
    n = len(laterals)
    for i in range(n - 1, 0, -1):
        laterals[i - 1] = bands.add(laterals[i - 1], bands.Resize(
            laterals[i], size=laterals[i - 1].size, mode='bilinear', align_corners=ac))
    fpn_outs = [bands.module_node(head.fpn_convs[i], laterals[i]) for i in range(n - 1)]
    fpn_outs.append(laterals[-1])
    for i in range(n - 1, 0, -1):
        fpn_outs[i] = bands.Resize(fpn_outs[i], size=fpn_outs[0].size, mode='bilinear',
                                   align_corners=ac)
    feat = bands.module_node(head.fpn_bottleneck, bands.cat(*fpn_outs))
    return _classify(head, feat)


def fpn_head(head, feats: List[bands.Node]) -> bands.Node:
    """FPNHead's (Semantic FPN) logits as a node."""
    x = _selected(head, feats)
    out = bands.module_node(head.scale_heads[0], x[0])
    for i in range(1, len(head.feature_strides)):
        out = bands.add(out, bands.Resize(bands.module_node(head.scale_heads[i], x[i]),
                                          size=out.size, mode='bilinear',
                                          align_corners=head.align_corners))
    return _classify(head, out)


def fpn_neck(neck, feats: List[bands.Node]) -> List[bands.Node]:
    """The FPN neck's outputs as nodes (mmseg's, or mmdet's: the same code)."""
    if neck.num_outs > len(neck.lateral_convs) and neck.add_extra_convs:
        raise NotImplementedError('FPN with add_extra_convs does not stream')
    laterals = [bands.module_node(conv, feats[i + neck.start_level])
                for i, conv in enumerate(neck.lateral_convs)]
    cfg = dict(neck.upsample_cfg)
    mode, ac = cfg.pop('mode', 'nearest'), cfg.pop('align_corners', None)
    for i in range(len(laterals) - 1, 0, -1):
        if 'scale_factor' in cfg:
            up = bands.Resize(laterals[i], scale_factor=cfg['scale_factor'], mode=mode,
                              align_corners=ac)
        else:
            up = bands.Resize(laterals[i], size=laterals[i - 1].size, mode=mode,
                              align_corners=ac)
        laterals[i - 1] = bands.add(laterals[i - 1], up)
    outs = [bands.module_node(neck.fpn_convs[i], lat) for i, lat in enumerate(laterals)]
    while len(outs) < neck.num_outs:  # extra levels by stride-2 max-pooling of the last
        outs.append(bands.MaxPool(outs[-1], 1, 2))
    return outs


def rpn_head(head, feats: List[bands.Node]):
    """mmdet's RPNHead on each level: (objectness nodes, box delta nodes)."""
    _check_eval(head)
    if type(head).__name__ != 'RPNHead':
        raise NotImplementedError(f'rpn head {type(head).__name__} does not stream; '
                                  'supported: RPNHead')
    scores, deltas = [], []
    for x in feats:
        x = bands.Map(F.relu, bands.module_node(head.rpn_conv, x))
        scores.append(bands.Conv(head.rpn_cls, x))
        deltas.append(bands.Conv(head.rpn_reg, x))
    return scores, deltas


def decode(segmentor, feats: List[bands.Node]) -> bands.Node:
    """The segmentor's neck (if any) and decode head on the backbone's
    pyramid nodes: the logits at the head's resolution. The auxiliary head
    does not take part in inference and is left out."""
    if segmentor.with_neck:
        _check_eval(segmentor.neck)
        name = type(segmentor.neck).__name__
        if name not in SUPPORTED_NECKS:
            raise NotImplementedError(f'neck {name} does not stream; supported: '
                                      f'{", ".join(SUPPORTED_NECKS)}')
        feats = fpn_neck(segmentor.neck, feats)
    head = segmentor.decode_head
    _check_eval(head)
    name = type(head).__name__
    if name == 'UPerHead':
        return uper_head(head, feats)
    if name == 'FPNHead':
        return fpn_head(head, feats)
    raise NotImplementedError(f'decode head {name} does not stream; supported: '
                              f'{", ".join(SUPPORTED_HEADS)}')
