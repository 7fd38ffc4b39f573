"""Map UFO-ViT / XCiT checkpoints (official, timm, mmdet/mmseg-trained) onto
:class:`~ufo_mm.models.ufo_vit.UFOViT` keys.

What happens to a checkpoint:
1. unwrap ``state_dict`` / ``model`` / ``module`` containers (XCiT saves
   ``{'model': ..., 'args': Namespace}``, mmengine ``{'state_dict': ...}``);
2. strip ``module.`` (DDP), then ``backbone.`` (detector/segmentor) prefixes;
   with ``prefix`` given, keep only keys under it;
3. rename official XCiT's ``pos_embeder.`` to ``pos_embed.``;
4. drop classification-only parts (class token, class-attention blocks, final
   norm, head) and anything else the model does not have, and report it;
5. refuse silently-random results: if no key matches, raise.
"""
import re
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

# Parts of XCiT/UFO-ViT that exist only for ImageNet classification.
CLASSIFICATION_ONLY = re.compile(r'^(cls_token|cls_attn_blocks\.|head\.|norm\.|fc_norm\.)')
RENAMES = ((re.compile(r'^pos_embeder\.'), 'pos_embed.'),)


def unwrap_state_dict(ckpt) -> Dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint object (raises TypeError if none)."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
    if not isinstance(ckpt, dict) or not any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise TypeError('checkpoint holds no state dict (expected a dict of tensors, possibly '
                        "under 'state_dict' or 'model')")
    return {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


def rename_keys(state_dict: Dict[str, torch.Tensor],
                prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Steps 2-3 above: strip ``module.``, keep what is under ``prefix`` (or
    strip ``backbone.``), apply the XCiT renames. Keys are backbone-relative."""
    sd = {}
    for k, v in state_dict.items():
        k = re.sub(r'^module\.', '', k)
        if prefix is not None:
            if not k.startswith(prefix + '.'):
                continue
            k = k[len(prefix) + 1:]
        else:
            k = re.sub(r'^backbone\.', '', k)
        for pattern, new in RENAMES:
            k = pattern.sub(new, k)
        sd[k] = v
    return sd


def convert_state_dict(state_dict: Dict[str, torch.Tensor], model: nn.Module,
                       prefix: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Convert keys for ``model`` and sort every input key into a report.

    Returns:
        (converted state dict holding only keys the model has with matching
        shapes, report) where report has lists 'loaded', 'missing' (model keys
        not in the checkpoint), 'dropped_classification', 'unexpected' (keys the
        model does not have) and 'shape_mismatch' (``key: ckpt vs model``).
    """
    sd = rename_keys(state_dict, prefix)
    target = model.state_dict()
    report = dict(loaded=[], missing=[], dropped_classification=[], unexpected=[],
                  shape_mismatch=[])
    out = {}
    for k, v in sd.items():
        if CLASSIFICATION_ONLY.match(k):
            report['dropped_classification'].append(k)
        elif k not in target:
            report['unexpected'].append(k)
        elif target[k].shape != v.shape:
            report['shape_mismatch'].append(
                f'{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}')
        else:
            out[k] = v
            report['loaded'].append(k)
    report['missing'] = [k for k in target if k not in out]
    return out, report


def _summary(keys: List[str], limit: int = 8) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_pretrained(model: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                    logger='current') -> dict:
    """Load ``checkpoint`` into ``model`` through mmengine's loader (so the
    project's weights_only-safe local loader applies), converting keys.

    Logs loaded / missing / dropped counts and raises ``RuntimeError`` naming
    the file when no key matches (a silently random backbone is the failure
    this guards against). Returns the report of :func:`convert_state_dict`.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    ckpt = _load_checkpoint(checkpoint, map_location='cpu', logger=logger)
    try:
        state_dict = unwrap_state_dict(ckpt)
    except TypeError as e:
        raise RuntimeError(f'{checkpoint}: {e}') from None
    converted, report = convert_state_dict(state_dict, model, prefix)
    if not converted:
        raise RuntimeError(
            f'{checkpoint}: no key matches {type(model).__name__} (checkpoint keys: '
            f'{_summary(list(state_dict))}); is it a UFO-ViT/XCiT checkpoint of this arch?')
    model.load_state_dict(converted, strict=False)
    print_log(f'Loaded {len(report["loaded"])}/{len(model.state_dict())} tensors from '
              f'{checkpoint}; missing {len(report["missing"])}, dropped '
              f'{len(report["dropped_classification"])} classification-only, '
              f'{len(report["unexpected"])} unexpected, '
              f'{len(report["shape_mismatch"])} shape mismatches', logger=logger)
    for name in ('missing', 'dropped_classification', 'unexpected', 'shape_mismatch'):
        if report[name]:
            print_log(f'  {name}: {_summary(report[name])}', logger=logger)
    return report
