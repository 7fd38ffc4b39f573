"""Convert a UFO-ViT / XCiT checkpoint file offline (``tools/convert_checkpoint.py``).

:func:`convert_checkpoint` reads the architecture off the checkpoint's shapes
(:func:`~.checkpoint_convert.detect_arch`), converts its keys as loading does
(:mod:`.checkpoint_convert`) into a :class:`~.ufo_vit.UFOViT` of that arch, and
refuses a checkpoint that does not fit the requested arch, naming the one it
fits; :func:`save_converted` writes the file ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` loads. It sits above both the model and the key mapping, so
neither imports the other back.
"""
import os
import os.path as osp
from typing import List, Optional, Union

import torch

from ..safe_load import safe_torch_load
from .checkpoint_convert import (DENSE_ONLY, UFO_ONLY, XCIT_ONLY, ConversionError,
                                 convert_state_dict, describe_arch, detect_arch,
                                 summarize_keys, unwrap_state_dict)
from .ufo_vit import UFOViT


def convert_checkpoint(src: str, arch: Optional[Union[str, dict]] = None,
                       prefix: Optional[str] = None) -> dict:
    """Load ``src`` safely and convert it; returns ``{'state_dict', 'meta', 'report'}``.

    ``arch`` defaults to the one read off the checkpoint (:func:`detect_arch`).
    XCiT's attention temperatures are dropped (``report['dropped_xcit_only']``);
    the dense adapters and UFO's ``gamma_q``/``gamma_kv`` may be missing (new,
    they keep their initialisation); anything else that does not fit refuses.

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
                            f"({summarize_keys(report['shape_mismatch'], 3)})")
        if unexpected:
            problems.append(f'{len(unexpected)} keys the arch does not have '
                            f'({summarize_keys(unexpected, 5)})')
        if missing_trunk:
            problems.append(f'{len(missing_trunk)} backbone keys missing from the checkpoint '
                            f'({summarize_keys(missing_trunk, 5)})')
        raise ConversionError(
            f'{src} does not fit arch {describe_arch(arch)}: {"; ".join(problems)}. '
            f'The checkpoint looks like {describe_arch(detected)}'
            + (f'; pass --arch {detected}' if isinstance(detected, str) else '') + '.')
    report = dict(report, dropped_xcit_only=xcit_only, unexpected=unexpected)
    meta = dict(arch=arch if isinstance(arch, str) else dict(arch),
                source=osp.abspath(src), prefix=prefix,
                loaded=len(report['loaded']), missing=list(report['missing']),
                dropped=list(report['dropped_classification']) + xcit_only)
    return dict(state_dict=converted, meta=meta, report=report)


def save_converted(result: dict, dst: str) -> None:
    """Write :func:`convert_checkpoint`'s result as ``{'state_dict', 'meta'}``, the
    file ``init_cfg=dict(type='Pretrained', checkpoint=dst)`` loads."""
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(dict(state_dict=result['state_dict'], meta=result['meta']), dst)


def conversion_summary(result: dict, dst: str) -> List[str]:
    """What a conversion did, as lines for the user: the arch, the counts of
    loaded / dropped / missing tensors (then up to 8 names of each) and the
    backbone config that uses ``dst``."""
    report, arch = result['report'], result['meta']['arch']
    lines = [f'arch: {describe_arch(arch)}',
             f"loaded {len(report['loaded'])} tensors; "
             f"dropped {len(report['dropped_classification'])} classification-only and "
             f"{len(report['dropped_xcit_only'])} XCiT-only (attention temperature); "
             f"missing {len(report['missing'])} (new in the dense backbone, keep their init)"]
    for name in ('dropped_classification', 'dropped_xcit_only', 'missing'):
        if report[name]:
            lines.append(f'  {name}: {summarize_keys(report[name], 8)}')
    lines.append(f'wrote {dst}; use it as backbone=dict(type=\'UFOViT\', arch={arch!r}, '
                 f'init_cfg=dict(type=\'Pretrained\', checkpoint={dst!r}))')
    return lines
