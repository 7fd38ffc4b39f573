"""mmseg's necks and decode heads, and mmdet's FPN and RPN head, as band
graphs (:mod:`.bands`), read off the modules themselves: their weights, their
``align_corners``, the sizes their ``forward`` resizes to. The graphs follow
each ``forward`` line by line (mmseg 1.x: ``UPerHead._forward_feature``,
``FPNHead.forward``, ``FCNHead.forward``, ``ASPPHead._forward_feature``,
``FPN.forward``; mmdet 3.x: ``FPN.forward``, which is mmseg's, and
``RPNHead.forward_single``), so the values are those of the whole-map forward.

Streaming another mmseg decode head is one function and one table entry:
a function ``(head, feats) -> logits node`` that follows the head's
``forward`` with the nodes of :mod:`.bands`, registered in :data:`DECODE_HEADS`
under the head's class name with :func:`stream_head` (docs/large_images.md,
"Adding a head", walks through ``FCNHead``). Global parts are computed first:
a branch that pools the whole map (UperNet's pyramid pooling, ASPP's image
pooling) averages it in one walk over its bands (:func:`global_pooling`);
what follows runs in bands. A head or neck with no entry raises
``NotImplementedError`` naming it and the supported ones.
"""
from typing import Callable, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import bands

HeadBuilder = Callable[[nn.Module, List[bands.Node]], bands.Node]
#: mmseg decode head class name -> the function that builds its logits node
DECODE_HEADS: Dict[str, HeadBuilder] = {}


def stream_head(name: str):
    """Register the decorated ``(head, feats) -> node`` function as the band
    graph of mmseg's decode head class ``name``."""
    def register(fn: HeadBuilder) -> HeadBuilder:
        DECODE_HEADS[name] = fn
        return fn
    return register


def check_eval(module: nn.Module):
    """Refuse a module in training mode (its norms would use batch statistics)."""
    if module.training:
        raise RuntimeError(f'streamed inference needs eval mode; {type(module).__name__} is '
                           'training')


def transformed_inputs(head, feats: List[bands.Node]):
    """``BaseDecodeHead._transform_inputs`` on nodes: one node (no input
    transform, or 'resize_concat') or a list ('multiple_select')."""
    if head.input_transform == 'multiple_select':
        return [feats[i] for i in head.in_index]
    if head.input_transform == 'resize_concat':
        inputs = [feats[i] for i in head.in_index]
        return bands.cat(*(bands.Resize(x, size=inputs[0].size, mode='bilinear',
                                        align_corners=head.align_corners) for x in inputs))
    return feats[head.in_index]


def classify(head, feat: bands.Node) -> bands.Node:
    """``cls_seg``: dropout (identity at test) and the 1x1 ``conv_seg``."""
    return bands.Conv(head.conv_seg, feat)


#: bytes of one band of a map walked for its global pooling
POOLING_BAND_BYTES = 16 << 20


def global_pooling(branches, x: bands.Node, channels: int, align_corners) -> List[bands.Node]:
    """``resize(branch(x), x's size, 'bilinear')`` for each branch that pools
    the whole map ``x`` (``nn.AdaptiveAvgPool2d``, then 1x1 layers). The
    poolings of all branches are computed at once, when the graph is built,
    in one walk over ``x`` in bands (:func:`.bands.adaptive_avg_pool`: the map
    is never held whole, nor are the token rows it comes from), the rest of
    each branch on its small pooled map, and held; the resizes back to the
    map's size run in bands. ``channels``: the map's, for the band size."""
    sizes = []
    for branch in branches:
        pool = branch[0]
        if not isinstance(pool, nn.AdaptiveAvgPool2d):
            raise NotImplementedError(f'global pooling branch starting with {type(pool).__name__}')
        s = pool.output_size
        sizes.append((s, s) if isinstance(s, int) else tuple(s))
    rows = max(1, POOLING_BAND_BYTES // (4 * channels * x.width))
    with torch.no_grad():
        pooled = bands.adaptive_avg_pool(x, sizes, rows)
        return [bands.Resize(bands.Tensor(branch[1:](p)), size=x.size, mode='bilinear',
                             align_corners=align_corners)
                for branch, p in zip(branches, pooled)]


def pyramid_pooling(head, top: bands.Node) -> bands.Node:
    """UPerHead's ``psp_forward`` on the stride-32 map ``top``: the map and
    each branch pooled and resized back (:func:`global_pooling`),
    concatenated, and the 3x3 bottleneck in bands, so no (channels x H/32 x
    W/32) map of the branches is formed whole (at 65536 px one is 2^31
    elements, past what CUDA's bilinear upsampling indexes)."""
    ppm = head.psp_modules
    parts = [top] + global_pooling(ppm, top, head.in_channels[-1], ppm.align_corners)
    return bands.module_node(head.bottleneck, bands.cat(*parts))


@stream_head('UPerHead')
def uper_head(head, feats: List[bands.Node]) -> bands.Node:
    """UPerHead's logits (B, num_classes, H/4, W/4) as a node."""
    inputs = transformed_inputs(head, feats)
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
    return classify(head, feat)


@stream_head('FPNHead')
def fpn_head(head, feats: List[bands.Node]) -> bands.Node:
    """FPNHead's (Semantic FPN) logits as a node."""
    x = transformed_inputs(head, feats)
    out = bands.module_node(head.scale_heads[0], x[0])
    for i in range(1, len(head.feature_strides)):
        out = bands.add(out, bands.Resize(bands.module_node(head.scale_heads[i], x[i]),
                                          size=out.size, mode='bilinear',
                                          align_corners=head.align_corners))
    return classify(head, out)


@stream_head('FCNHead')
def fcn_head(head, feats: List[bands.Node]) -> bands.Node:
    """FCNHead's logits: its 3x3 convolutions (any dilation), optionally
    concatenated with the input and fused by ``conv_cat``, then ``cls_seg``."""
    x = transformed_inputs(head, feats)
    out = bands.module_node(head.convs, x)
    if head.concat_input:
        out = bands.module_node(head.conv_cat, bands.cat(x, out))
    return classify(head, out)


@stream_head('ASPPHead')
def aspp_head(head, feats: List[bands.Node]) -> bands.Node:
    """ASPPHead's (DeepLabV3) logits: the image-level branch pooled over the
    whole map (:func:`global_pooling`), the atrous 1x1 / 3x3 branches in
    bands, concatenated, the bottleneck, ``cls_seg``."""
    x = transformed_inputs(head, feats)
    channels = head.in_channels if isinstance(head.in_channels, int) else sum(head.in_channels)
    parts = global_pooling([head.image_pool], x, channels, head.align_corners)
    parts += [bands.module_node(branch, x) for branch in head.aspp_modules]
    return classify(head, bands.module_node(head.bottleneck, bands.cat(*parts)))


#: neck class name -> the function that builds its output nodes
NECKS: Dict[str, Callable] = {}


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


NECKS['FPN'] = fpn_neck


def rpn_head(head, feats: List[bands.Node]):
    """mmdet's RPNHead on each level: (objectness nodes, box delta nodes)."""
    check_eval(head)
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
    pyramid nodes: the logits at the head's resolution, by the tables
    :data:`NECKS` and :data:`DECODE_HEADS`. The auxiliary head does not take
    part in inference and is left out."""
    if segmentor.with_neck:
        check_eval(segmentor.neck)
        feats = _entry(NECKS, segmentor.neck, 'neck')(segmentor.neck, feats)
    head = segmentor.decode_head
    check_eval(head)
    return _entry(DECODE_HEADS, head, 'decode head')(head, feats)


def _entry(table: dict, module: nn.Module, kind: str):
    name = type(module).__name__
    if name not in table:
        raise NotImplementedError(f'{kind} {name} does not stream; supported: '
                                  f'{", ".join(sorted(table))} (docs/large_images.md, '
                                  '"Adding a head")')
    return table[name]
