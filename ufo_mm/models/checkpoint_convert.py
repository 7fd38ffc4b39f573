"""Map UFO-ViT / XCiT checkpoints (official, timm, mmpretrain, mmdet/mmseg/
mmpretrain-trained) onto the keys of a UFO-ViT model: the dense backbone
:class:`~ufo_mm.models.ufo_vit.UFOViT` or the classifier
:class:`~ufo_mm.models.ufo_vit_classifier.UFOViTClassifier`.

What happens to a checkpoint:
1. unwrap ``state_dict`` / ``model`` / ``module`` containers (XCiT saves
   ``{'model': ..., 'args': Namespace}``, mmengine ``{'state_dict': ...}``);
2. strip ``module.`` (DDP), then ``backbone.`` (detector/segmentor/classifier)
   prefixes; with ``prefix`` given, keep only keys under it;
3. rename into XCiT's names as timm writes them (the model's): official XCiT's
   ``pos_embeder.``; mmpretrain's ``xca_layers.`` / ``ca_layers.``, ``ffn``,
   ``ConvModule`` (``.conv.`` / ``.bn.``) and ``head.fc.`` names
   (:data:`RENAMES`); for a model with timm's split class-attention q, k, v,
   the official fused ``qkv`` is split;
4. load what the model has (a classifier takes the class token,
   class-attention blocks, norm and head too); drop classification-only parts
   that it does not have (the dense backbone) and anything else, and report it;
5. refuse silently-random results: if no key matches, raise.

This module is what loading needs (``UFOViT.init_weights`` calls
:func:`load_pretrained`); it knows the model sizes (``arch_zoo``) but not the
model. The offline conversion of a file, which builds a model to check the
checkpoint against, is :mod:`.checkpoint_offline`.
"""
import re
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .arch_zoo import ARCH_ZOO, resolve_arch

# Parts of XCiT/UFO-ViT that exist only for ImageNet classification.
CLASSIFICATION_ONLY = re.compile(r'^(cls_token|cls_attn_blocks\.|head\.|norm\.|fc_norm\.)')
# Other layouts' names -> XCiT's as timm writes them (applied in order, on
# backbone-relative keys): official XCiT, then mmpretrain's XCiT backbone
# (mmpretrain.models.backbones.XCiT) and ImageClassifier head.
RENAMES = (
    (re.compile(r'^pos_embeder\.'), 'pos_embed.'),
    (re.compile(r'^xca_layers\.'), 'blocks.'),
    (re.compile(r'^ca_layers\.'), 'cls_attn_blocks.'),
    (re.compile(r'\.ffn\.layers\.0\.0\.'), '.mlp.fc1.'),
    (re.compile(r'\.ffn\.layers\.1\.'), '.mlp.fc2.'),
    (re.compile(r'\.local_mp\.conv1\.conv\.'), '.local_mp.conv1.'),
    (re.compile(r'\.local_mp\.conv1\.bn\.'), '.local_mp.bn.'),
    (re.compile(r'\.local_mp\.conv2\.conv\.'), '.local_mp.conv2.'),
    (re.compile(r'^pos_embed\.token_projection\.conv\.'), 'pos_embed.token_projection.'),
    # mmpretrain's patch embedding is ConvModules (conv + bn + GELU in one); the model's is
    # Sequential(conv3x3_norm, GELU, conv3x3_norm, ...): ConvModule i is entry 2i
    (re.compile(r'^patch_embed\.proj\.(\d+)\.(conv|bn)\.'),
     lambda m: f"patch_embed.proj.{2 * int(m[1])}.{0 if m[2] == 'conv' else 1}."),
    (re.compile(r'^head\.fc\.'), 'head.'),
)
# Official XCiT's class attention projects q, k, v in one; timm's (the model's) in three.
FUSED_CLS_QKV = re.compile(r'^(cls_attn_blocks\.\d+\.attn\.)qkv\.(weight|bias)$')
# XCiT's per-head softmax temperature: no counterpart in UFO attention.
XCIT_ONLY = re.compile(r'^blocks\.\d+\.attn\.temperature$')
# Parts of the dense backbone that a classification checkpoint cannot have.
DENSE_ONLY = re.compile(r'^fpn\d\.')
UFO_ONLY = re.compile(r'^blocks\.\d+\.attn\.gamma_(q|kv)$')


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted for the requested architecture."""


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
    strip ``backbone.``), apply :data:`RENAMES`. Keys are backbone-relative,
    in XCiT's names (the fused ``qkv`` of official class attention kept)."""
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


def split_fused_qkv(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official XCiT's ``cls_attn_blocks.N.attn.qkv.*`` -> timm's ``...attn.{q,k,v}.*``
    (the (3C, ...) tensor cut into three (C, ...) ones, in q, k, v order)."""
    out = {}
    for k, v in state_dict.items():
        m = FUSED_CLS_QKV.match(k)
        if m:
            for name, part in zip('qkv', v.chunk(3, dim=0)):
                out[f'{m[1]}{name}.{m[2]}'] = part
        else:
            out[k] = v
    return out


def convert_state_dict(state_dict: Dict[str, torch.Tensor], model: nn.Module,
                       prefix: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Convert keys for ``model`` and sort every input key into a report.

    Returns:
        (converted state dict holding only keys the model has with matching
        shapes, report) where report has lists 'loaded', 'missing' (model keys
        not in the checkpoint), 'dropped_classification' (classification-only
        keys the model does not have), 'unexpected' (other keys the model does
        not have) and 'shape_mismatch' (``key: ckpt vs model``).
    """
    sd = rename_keys(state_dict, prefix)
    target = model.state_dict()
    if any(FUSED_CLS_QKV.match(k) for k in sd) and any(
            k.endswith('.attn.q.weight') and k.startswith('cls_attn_blocks.') for k in target):
        sd = split_fused_qkv(sd)
    report = dict(loaded=[], missing=[], dropped_classification=[], unexpected=[],
                  shape_mismatch=[])
    out = {}
    for k, v in sd.items():
        if k not in target:
            report['dropped_classification' if CLASSIFICATION_ONLY.match(k)
                   else 'unexpected'].append(k)
        elif target[k].shape != v.shape:
            report['shape_mismatch'].append(
                f'{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}')
        else:
            out[k] = v
            report['loaded'].append(k)
    report['missing'] = [k for k in target if k not in out]
    return out, report


def summarize_keys(keys: List[str], limit: int = 8) -> str:
    """The first ``limit`` keys and how many more there are."""
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
            f'{summarize_keys(list(state_dict))}); is it a UFO-ViT/XCiT checkpoint of this arch?')
    model.load_state_dict(converted, strict=False)
    print_log(f'Loaded {len(report["loaded"])}/{len(model.state_dict())} tensors from '
              f'{checkpoint}; missing {len(report["missing"])}, dropped '
              f'{len(report["dropped_classification"])} classification-only, '
              f'{len(report["unexpected"])} unexpected, '
              f'{len(report["shape_mismatch"])} shape mismatches', logger=logger)
    for name in ('missing', 'dropped_classification', 'unexpected', 'shape_mismatch'):
        if report[name]:
            print_log(f'  {name}: {summarize_keys(report[name])}', logger=logger)
    return report


def detect_arch(state_dict: Dict[str, torch.Tensor],
                prefix: Optional[str] = None) -> Union[str, dict]:
    """Architecture of a checkpoint from its shapes: an arch name such as
    'small_12_p16' when it is in the zoo, else a custom arch dict.

    Raises:
        ConversionError: the checkpoint has no UFO-ViT/XCiT trunk.
    """
    shapes = {k: tuple(v.shape) for k, v in rename_keys(state_dict, prefix).items()}
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


def describe_arch(arch: Union[str, dict]) -> str:
    """'small_12_p16 (embed_dims 384, heads 8, depth 12, patch 16)'."""
    s = resolve_arch(arch)
    name = arch if isinstance(arch, str) else 'custom'
    return (f"{name} (embed_dims {s['embed_dims']}, heads {s['num_heads']}, depth "
            f"{s['depth']}, patch {s['patch_size']})")
