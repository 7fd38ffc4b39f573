"""Convert an XCiT / UFO-ViT classification checkpoint into a UFOViT backbone checkpoint.

    python tools/convert_checkpoint.py SRC DST [--arch ARCH] [--prefix PREFIX]

SRC may be an official facebookresearch/xcit file (``{'model': ..., 'args':
Namespace}``, ``pos_embeder.*``), a timm state dict (``pos_embed.*``), an
mmengine checkpoint (``{'state_dict': ...}``, optionally under ``backbone.``)
or a UFO-ViT one. The keys are mapped by
``ufo_mm.models.checkpoint_convert.convert_state_dict``; classification-only
parts (class token, class-attention blocks, final norm, head) and XCiT's
softmax temperature (UFO attention has none) are dropped; the pyramid adapters
``fpn1..fpn4`` (and UFO's ``gamma_q``/``gamma_kv`` for XCiT sources) are new
and keep their initialisation. DST holds ``{'state_dict': backbone weights,
'meta': {...}}``, for

    backbone=dict(type='UFOViT', arch=ARCH,
                  init_cfg=dict(type='Pretrained', checkpoint=DST))

Without ``--arch`` the architecture is read off the checkpoint's shapes.
A checkpoint that does not fit the architecture (other width, depth, head
count or patch size) is refused with the architecture it does fit.
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Union

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from ufo_mm.models.checkpoint_convert import (convert_state_dict, rename_keys,  # noqa: E402
                                              unwrap_state_dict)
from ufo_mm.models.ufo_vit import ARCH_ZOO, UFOViT, resolve_arch  # noqa: E402
from ufo_mm.safe_load import safe_torch_load  # noqa: E402

# XCiT's per-head softmax temperature: no counterpart in UFO attention.
XCIT_ONLY = re.compile(r'^blocks\.\d+\.attn\.temperature$')
# Parts of the dense backbone that a classification checkpoint cannot have.
DENSE_ONLY = re.compile(r'^fpn\d\.')
UFO_ONLY = re.compile(r'^blocks\.\d+\.attn\.gamma_(q|kv)$')


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted for the requested architecture."""


def _trunk_keys(state_dict: Dict[str, torch.Tensor], prefix: Optional[str]) -> Dict[str, tuple]:
    """Backbone-relative key -> shape, with the same renames as the converter."""
    return {k: tuple(v.shape) for k, v in rename_keys(state_dict, prefix).items()}


def detect_arch(state_dict: Dict[str, torch.Tensor],
                prefix: Optional[str] = None) -> Union[str, dict]:
    """Architecture of a checkpoint from its shapes: an arch name such as
    'small_12_p16' when it is in the zoo, else a custom arch dict.

    Raises:
        ConversionError: the checkpoint has no UFO-ViT/XCiT trunk.
    """
    shapes = _trunk_keys(state_dict, prefix)
    blocks = {int(m.group(1)) for k in shapes for m in [re.match(r'blocks\.(\d+)\.', k)] if m}
    if not blocks or 'blocks.0.norm1.weight' not in shapes:
        raise ConversionError('no UFO-ViT/XCiT blocks (blocks.N.norm1, ...) in the checkpoint; '
                              f'keys look like: {", ".join(list(shapes)[:6])}')
    embed_dims = shapes['blocks.0.norm1.weight'][0]
    depth = max(blocks) + 1
    heads_key = next((k for k in ('blocks.0.attn.temperature', 'blocks.0.attn.gamma_q',
                                  'blocks.0.attn.gamma') if k in shapes), None)
    if heads_key is None:
        raise ConversionError('cannot tell the number of heads (no blocks.0.attn.temperature '
                              'or gamma_q); pass --arch')
    num_heads = shapes[heads_key][0]
    convs = {int(m.group(1)) for k in shapes
             for m in [re.match(r'patch_embed\.proj\.(\d+)\.0\.weight$', k)] if m}
    patch_size = {4: 16, 3: 8}.get(len(convs))
    if patch_size is None:
        raise ConversionError(f'cannot tell the patch size from {len(convs)} patch-embedding '
                              'convolutions (expected 4 for p16, 3 for p8); pass --arch')
    for name, setting in ARCH_ZOO.items():
        if (setting['embed_dims'], setting['num_heads'], setting['depth']) == (
                embed_dims, num_heads, depth):
            return f'{name}_p{patch_size}'
    return dict(embed_dims=embed_dims, num_heads=num_heads, depth=depth, patch_size=patch_size)


def _describe(arch: Union[str, dict]) -> str:
    s = resolve_arch(arch)
    name = arch if isinstance(arch, str) else 'custom'
    return (f"{name} (embed_dims {s['embed_dims']}, heads {s['num_heads']}, depth "
            f"{s['depth']}, patch {s['patch_size']})")


def _short(keys: List[str], limit: int = 5) -> str:
    return ', '.join(keys[:limit]) + (f', ... ({len(keys) - limit} more)'
                                      if len(keys) > limit else '')


def convert(src: str, arch: Optional[Union[str, dict]] = None,
            prefix: Optional[str] = None) -> dict:
    """Load ``src`` safely and convert it; returns ``{'state_dict', 'meta', 'report'}``.

    Raises:
        ConversionError: nothing matches, or the checkpoint is for another arch.
    """
    ckpt = safe_torch_load(src)
    try:
        state_dict = unwrap_state_dict(ckpt)
    except TypeError as e:
        raise ConversionError(f'{src}: {e}') from None
    detected = detect_arch(state_dict, prefix)
    arch = detected if arch is None else arch
    model = UFOViT(arch=arch, init_cfg=None)  # default out_indices build every block
    converted, report = convert_state_dict(state_dict, model, prefix)

    xcit_only = [k for k in report['unexpected'] if XCIT_ONLY.match(k)]
    unexpected = [k for k in report['unexpected'] if not XCIT_ONLY.match(k)]
    mismatched = {m.split(':')[0] for m in report['shape_mismatch']}
    missing_trunk = [k for k in report['missing'] if k not in mismatched
                     and not (DENSE_ONLY.match(k) or UFO_ONLY.match(k))]
    if report['shape_mismatch'] or unexpected or missing_trunk or not converted:
        problems = []
        if report['shape_mismatch']:
            problems.append(f"{len(report['shape_mismatch'])} shape mismatches "
                            f"({_short(report['shape_mismatch'], 3)})")
        if unexpected:
            problems.append(f'{len(unexpected)} keys the arch does not have ({_short(unexpected)})')
        if missing_trunk:
            problems.append(f'{len(missing_trunk)} backbone keys missing from the checkpoint '
                            f'({_short(missing_trunk)})')
        raise ConversionError(
            f'{src} does not fit arch {_describe(arch)}: {"; ".join(problems)}. '
            f'The checkpoint looks like {_describe(detected)}'
            + (f'; pass --arch {detected}' if isinstance(detected, str) else '') + '.')
    report = dict(report, dropped_xcit_only=xcit_only, unexpected=unexpected)
    meta = dict(arch=arch if isinstance(arch, str) else dict(arch),
                source=osp.abspath(src), prefix=prefix,
                loaded=len(report['loaded']), missing=list(report['missing']),
                dropped=list(report['dropped_classification']) + xcit_only)
    return dict(state_dict=converted, meta=meta, report=report)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='XCiT / UFO-ViT checkpoint (official, timm or mmengine)')
    parser.add_argument('dst', help='output file for init_cfg=dict(type="Pretrained", ...)')
    parser.add_argument('--arch', help='UFOViT arch, e.g. small_12_p16 (default: read off '
                        'the checkpoint)')
    parser.add_argument('--prefix', help='only convert keys under this prefix, e.g. backbone '
                        '(for detector/segmentor checkpoints holding other parts too)')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        result = convert(args.src, args.arch, args.prefix)
    except ConversionError as e:
        raise SystemExit(f'error: {e}') from None
    report = result['report']
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(dict(state_dict=result['state_dict'], meta=result['meta']), args.dst)
    arch = result['meta']['arch']
    print(f'arch: {_describe(arch)}')
    print(f"loaded {len(report['loaded'])} tensors; "
          f"dropped {len(report['dropped_classification'])} classification-only and "
          f"{len(report['dropped_xcit_only'])} XCiT-only (attention temperature); "
          f"missing {len(report['missing'])} (new in the dense backbone, keep their init)")
    for name in ('dropped_classification', 'dropped_xcit_only', 'missing'):
        if report[name]:
            print(f'  {name}: {_short(report[name], 8)}')
    print(f'wrote {args.dst}; use it as backbone=dict(type=\'UFOViT\', arch={arch!r}, '
          f'init_cfg=dict(type=\'Pretrained\', checkpoint={args.dst!r}))')
    return result


if __name__ == '__main__':
    main()
