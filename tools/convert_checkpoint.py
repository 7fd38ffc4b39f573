"""Convert an XCiT / UFO-ViT classification checkpoint into a UFOViT backbone checkpoint.

    python tools/convert_checkpoint.py SRC DST [--arch ARCH] [--prefix PREFIX]

SRC may be an official facebookresearch/xcit file (``{'model': ..., 'args':
Namespace}``, ``pos_embeder.*``, fused class-attention ``qkv``), a timm state
dict (``pos_embed.*``), an mmpretrain XCiT classifier (``backbone.xca_layers.*``,
``backbone.ca_layers.*``, ``head.fc.*``), an mmengine checkpoint
(``{'state_dict': ...}``, optionally under ``backbone.``: a UFO-ViT classifier
trained with mmpretrain, a detector, a segmentor) or a UFO-ViT one. It is
``ufo_mm.models.checkpoint_offline.convert_checkpoint``, which maps the keys as
loading does; classification-only
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
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.models.checkpoint_convert import ConversionError  # noqa: E402
from ufo_mm.models.checkpoint_offline import (conversion_summary,  # noqa: E402
                                              convert_checkpoint, save_converted)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='XCiT / UFO-ViT checkpoint (official, timm, mmpretrain or '
                        'mmengine)')
    parser.add_argument('dst', help='output file for init_cfg=dict(type="Pretrained", ...)')
    parser.add_argument('--arch', help='UFOViT arch, e.g. small_12_p16 (default: read off '
                        'the checkpoint)')
    parser.add_argument('--prefix', help='only convert keys under this prefix, e.g. backbone '
                        '(for detector/segmentor checkpoints holding other parts too)')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        result = convert_checkpoint(args.src, args.arch, args.prefix)
    except ConversionError as e:
        raise SystemExit(f'error: {e}') from None
    save_converted(result, args.dst)
    print('\n'.join(conversion_summary(result, args.dst)))
    return result


if __name__ == '__main__':
    main()
