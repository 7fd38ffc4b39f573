"""Pretrained loading: XCiT/UFO-ViT classification checkpoints map onto UFOViT;
offline conversion of a file (``tools/convert_checkpoint.py``) on fabricated
XCiT classification checkpoints (official facebookresearch/xcit and timm key
names); XCiT classifiers that timm and mmpretrain build, and the official
layout made from timm's, load whole into the XCA classifier (same logits) and
into the dense backbone."""
import argparse
import re

import pytest
import torch

from tests.tool_runner import run_tool
from ufo_mm.models import UFOViT
from ufo_mm.models.checkpoint_convert import (ConversionError, convert_state_dict,
                                              load_pretrained, unwrap_state_dict)
from ufo_mm.models.checkpoint_offline import (conversion_summary, convert_checkpoint,
                                              save_converted)
from ufo_mm.safe_load import safe_torch_load

ARCH = dict(embed_dims=64, num_heads=4, depth=4, out_indices=(0, 1, 2, 3))


def fabricate_xcit_classification(model, C=64, official=True):
    """A checkpoint with XCiT's classification layout and key names."""
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v
          for k, v in model.state_dict().items() if not k.startswith('fpn')}
    if official:  # facebookresearch/xcit names the encoding 'pos_embeder'
        sd = {k.replace('pos_embed.', 'pos_embeder.'): v for k, v in sd.items()}
    sd['cls_token'] = torch.zeros(1, 1, C)
    for i in range(2):
        sd[f'cls_attn_blocks.{i}.attn.qkv.weight'] = torch.zeros(3 * C, C)
        sd[f'cls_attn_blocks.{i}.gamma1'] = torch.zeros(C)
    sd['norm.weight'] = torch.ones(C)
    sd['head.weight'] = torch.zeros(1000, C)
    sd['head.bias'] = torch.zeros(1000)
    return sd


@pytest.mark.parametrize('official', [True, False])
def test_classification_checkpoint_loads_and_reports(tmp_path, official):
    src = UFOViT(arch=ARCH)
    sd = fabricate_xcit_classification(src, official=official)
    path = tmp_path / 'xcit.pth'
    torch.save({'model': sd, 'epoch': 300}, path)

    model = UFOViT(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    for k, v in sd.items():
        k = k.replace('pos_embeder.', 'pos_embed.')
        if k in loaded:
            assert torch.equal(loaded[k], v), k

    _, report = convert_state_dict(unwrap_state_dict(torch.load(path)), model)
    assert sorted(report['dropped_classification']) == sorted(
        k for k in sd if k.startswith(('cls_', 'norm.', 'head.')))
    assert report['unexpected'] == [] and report['shape_mismatch'] == []
    # Only the dense-prediction adapters (with BN buffers) are new.
    assert report['missing'] and all(k.startswith('fpn') for k in report['missing'])


def test_detector_checkpoint_prefixes_are_stripped():
    model = UFOViT(arch=ARCH)
    sd = {f'module.backbone.{k}': v for k, v in model.state_dict().items()}
    sd['module.neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    out, report = convert_state_dict(sd, model)
    assert set(out) == set(model.state_dict())
    assert report['missing'] == []
    out, report = convert_state_dict(sd, model, prefix='backbone')
    assert set(out) == set(model.state_dict()) and report['unexpected'] == []


def test_mmengine_checkpoint_layout(tmp_path):
    src = UFOViT(arch=ARCH)
    path = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {}, 'state_dict': {f'backbone.{k}': v
                                           for k, v in src.state_dict().items()}}, path)
    model = UFOViT(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_shape_mismatch_is_reported_not_loaded():
    model = UFOViT(arch=ARCH)
    other = UFOViT(arch=dict(ARCH, embed_dims=32))
    out, report = convert_state_dict(other.state_dict(), model)
    assert report['shape_mismatch'] and all(k not in out for k in
                                            (s.split(':')[0] for s in report['shape_mismatch']))


def test_nothing_matched_raises(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)}}, path)
    model = UFOViT(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='no key matches UFOViT'):
        model.init_weights()


def test_missing_checkpoint_file_names_it(tmp_path):
    path = tmp_path / 'nope.pth'
    model = UFOViT(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        model.init_weights()


def test_not_a_state_dict(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([1, 2, 3], path)
    model = UFOViT(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='list.pth'):
        model.init_weights()


# ------------------------------------------------------------- offline conversion of a file
T12 = 'tiny_12_p16'  # T12: 192 channels, 4 heads, 12 blocks


def xcit_classification_state_dict(arch=T12, official=True, seed=0):
    """XCiT's classification layout: trunk + class token, 2 class-attention
    blocks, final norm, 1000-way head; softmax temperature instead of UFO's
    gamma_q/gamma_kv; no dense adapters."""
    torch.manual_seed(seed)
    model = UFOViT(arch=arch)
    C, h = model.embed_dims, model.blocks[0].attn.num_heads
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith('fpn') or k.endswith(('attn.gamma_q', 'attn.gamma_kv')):
            continue
        sd[k] = torch.randn_like(v) if v.is_floating_point() else v
    for i in range(len(model.blocks)):
        sd[f'blocks.{i}.attn.temperature'] = torch.rand(h, 1, 1)
    if official:  # facebookresearch/xcit names the encoding 'pos_embeder'
        sd = {k.replace('pos_embed.', 'pos_embeder.'): v for k, v in sd.items()}
    sd['cls_token'] = torch.randn(1, 1, C)
    for i in range(2):
        sd[f'cls_attn_blocks.{i}.norm1.weight'] = torch.ones(C)
        sd[f'cls_attn_blocks.{i}.attn.qkv.weight'] = torch.randn(3 * C, C)
        sd[f'cls_attn_blocks.{i}.gamma1'] = torch.ones(C)
    sd['norm.weight'], sd['norm.bias'] = torch.ones(C), torch.zeros(C)
    sd['head.weight'], sd['head.bias'] = torch.randn(1000, C), torch.zeros(1000)
    return sd


def _save_source(tmp_path, sd, official):
    path = tmp_path / ('xcit_official.pth' if official else 'xcit_timm.pth')
    if official:  # what facebookresearch/xcit's main.py saves
        torch.save({'model': sd, 'optimizer': {}, 'epoch': 399,
                    'args': argparse.Namespace(model='xcit_tiny_12_p16', lr=5e-4)}, path)
    else:  # timm: a bare state dict
        torch.save(sd, path)
    return path


@pytest.mark.parametrize('official', [True, False], ids=['official', 'timm'])
def test_converted_file_loads_through_init_cfg(tmp_path, official):
    sd = xcit_classification_state_dict(official=official)
    src = _save_source(tmp_path, sd, official)
    dst = tmp_path / 'out' / 'ufo_t12.pth'
    result = convert_checkpoint(str(src))  # arch read off the checkpoint
    save_converted(result, str(dst))

    out = '\n'.join(conversion_summary(result, str(dst)))
    assert 'tiny_12_p16' in out and 'dropped 11 classification-only and 12 XCiT-only' in out
    assert result['meta']['arch'] == 'tiny_12_p16'
    written = safe_torch_load(dst)
    assert set(written) == {'state_dict', 'meta'}
    converted = written['state_dict']
    assert not any(k.startswith(('cls_', 'head.', 'norm.', 'pos_embeder.')) or 'temperature' in k
                   for k in converted)
    assert sorted(written['meta']['dropped']) == sorted(
        k for k in sd if k.startswith(('cls_', 'norm.', 'head.')) or 'temperature' in k)
    # every trunk tensor arrives unchanged, under this backbone's names
    for k, v in sd.items():
        k = k.replace('pos_embeder.', 'pos_embed.')
        if k in converted:
            assert torch.equal(converted[k], v), k
    assert len(converted) == len([k for k in sd if not k.startswith(
        ('cls_', 'head.', 'norm.')) and 'temperature' not in k])

    # the file works as init_cfg Pretrained: nothing unexpected, only new parts missing
    model = UFOViT(arch='tiny_12_p16', init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    assert torch.equal(model.state_dict()['blocks.11.mlp.fc2.weight'],
                       sd['blocks.11.mlp.fc2.weight'])
    report = load_pretrained(UFOViT(arch='tiny_12_p16'), str(dst))
    assert report['unexpected'] == [] and report['shape_mismatch'] == []
    assert report['dropped_classification'] == []
    assert report['missing'] and all(
        k.startswith('fpn') or k.endswith(('gamma_q', 'gamma_kv')) for k in report['missing'])


def test_explicit_matching_arch_and_prefix(tmp_path):
    """A detector checkpoint: only keys under --prefix are converted."""
    sd = xcit_classification_state_dict(official=False)
    full = {f'backbone.{k}': v for k, v in sd.items()}
    full['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 192, 1, 1)
    src = tmp_path / 'detector.pth'
    torch.save({'meta': {'epoch': 36}, 'state_dict': full}, src)
    dst = tmp_path / 'backbone.pth'
    save_converted(convert_checkpoint(str(src), 'T12/16', 'backbone'), str(dst))
    converted = safe_torch_load(dst)['state_dict']
    assert torch.equal(converted['patch_embed.proj.0.0.weight'],
                       sd['patch_embed.proj.0.0.weight'])
    assert not any(k.startswith('neck') for k in converted)


@pytest.mark.parametrize('arch', ['small_12_p16', 'tiny_12_p8', 'tiny_24_p16'])
def test_wrong_arch_is_refused_with_the_right_one(tmp_path, arch):
    src = _save_source(tmp_path, xcit_classification_state_dict(official=True), official=True)
    dst = tmp_path / 'out.pth'
    if arch == 'tiny_24_p16':  # not a zoo name: the arch parser rejects it first
        with pytest.raises(KeyError, match='unknown UFO-ViT arch'):
            convert_checkpoint(str(src), arch)
        return
    with pytest.raises(ConversionError) as exc:
        convert_checkpoint(str(src), arch)
    message = str(exc.value)
    assert f'does not fit arch {arch}' in message
    assert 'looks like tiny_12_p16' in message and '--arch tiny_12_p16' in message
    assert not dst.exists()


def test_depth_mismatch_is_refused(tmp_path):
    sd = xcit_classification_state_dict(arch='small_24_p16', official=False)
    src = _save_source(tmp_path, sd, official=False)
    with pytest.raises(ConversionError, match=r'does not fit arch small_12_p16.*12 keys|'
                                              r'does not fit arch small_12_p16.*keys the arch'):
        convert_checkpoint(str(src), 'small_12_p16')
    # without an arch the depth is read off the checkpoint
    result = convert_checkpoint(str(src))
    assert result['meta']['arch'] == 'small_24_p16'


def test_not_a_backbone_checkpoint(tmp_path):
    src = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)}}, src)
    with pytest.raises(ConversionError, match='no UFO-ViT/XCiT blocks'):
        convert_checkpoint(str(src))


# ------------------------------------------ XCiT in official, timm and mmpretrain key names
XCIT = dict(embed_dims=64, num_heads=4, depth=4, patch_size=8)
LAYOUTS = ['official', 'timm', 'mmpretrain']


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BatchNorm statistics, eval mode: every tensor matters."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def timm_xcit():
    pytest.importorskip('timm', reason='timm is not installed (requirements/constraints.txt '
                        'pins it; the torch 2.13 CPU stack cannot have it)')
    from timm.models.xcit import Xcit
    return randomised(Xcit(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4,
                           eta=1.0, tokens_norm=True, num_classes=10))


def mmpretrain_xcit():
    pytest.importorskip('mmpretrain', reason='mmpretrain is not installed (needs torchvision)')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    # the classifier builds its data preprocessor in the default scope: mmpretrain's here,
    # whatever an earlier test left
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='XCiT', img_size=64, patch_size=8, embed_dims=64, depth=4,
                          num_heads=4, layer_scale_init_value=1.0, tokens_norm=True,
                          out_type='cls_token'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=64)))
    return randomised(model)


def official_from_timm(sd: dict) -> dict:
    """timm's state dict in facebookresearch/xcit's names: ``pos_embeder`` and one
    fused qkv projection in each class-attention block (timm's checkpoint_filter_fn
    undone)."""
    out = {k.replace('pos_embed.', 'pos_embeder.'): v for k, v in sd.items()
           if not re.search(r'cls_attn_blocks\.\d+\.attn\.[qkv]\.', k)}
    for i in range(2):
        for kind in ('weight', 'bias'):
            out[f'cls_attn_blocks.{i}.attn.qkv.{kind}'] = torch.cat(
                [sd[f'cls_attn_blocks.{i}.attn.{n}.{kind}'] for n in 'qkv'])
    return out


def xcit_checkpoint(tmp_path, layout):
    """(reference model, its logits function, checkpoint file in ``layout``'s names)."""
    path = tmp_path / f'xcit_{layout}.pth'
    if layout == 'mmpretrain':
        ref = mmpretrain_xcit()
        assert any(k.startswith('backbone.xca_layers.') for k in ref.state_dict())
        torch.save({'meta': {'epoch': 300}, 'state_dict': ref.state_dict()}, path)
        return ref, lambda x: ref(x, mode='tensor'), path
    ref = timm_xcit()
    if layout == 'official':  # what facebookresearch/xcit's main.py saves
        torch.save({'model': official_from_timm(ref.state_dict()), 'epoch': 399,
                    'args': argparse.Namespace(model='xcit_custom', lr=5e-4)}, path)
    else:  # timm: a bare state dict
        torch.save(ref.state_dict(), path)
    return ref, ref, path


@pytest.mark.parametrize('layout', LAYOUTS)
def test_xcit_checkpoint_loads_whole_into_the_xca_classifier(tmp_path, layout):
    """Every tensor of an XCiT classifier lands in the UFO-ViT classifier with
    XCiT's attention, and the logits are XCiT's."""
    from ufo_mm.models import UFOViTClassifier
    ref, logits, path = xcit_checkpoint(tmp_path, layout)
    model = UFOViTClassifier(XCIT, num_classes=10, attn_type='xca',
                             init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = load_pretrained(model, str(path))
    assert report['missing'] == [] and report['unexpected'] == []
    assert report['shape_mismatch'] == [] and report['dropped_classification'] == []
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits(x))


@pytest.mark.parametrize('layout', LAYOUTS)
def test_xcit_checkpoint_initialises_the_dense_backbone(tmp_path, layout):
    """UFOViT (UFO attention) from each layout: the trunk tensors of the XCA
    classifier loaded from the same file, classification parts dropped (in the
    file's own names), XCiT's temperatures unexpected, only the pyramid
    adapters and UFO's XNorm scales missing."""
    from ufo_mm.models import UFOViTClassifier
    _, _, path = xcit_checkpoint(tmp_path, layout)
    clf = UFOViTClassifier(XCIT, num_classes=10, attn_type='xca')
    load_pretrained(clf, str(path))
    model = UFOViT(arch=XCIT, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    report = load_pretrained(UFOViT(arch=XCIT), str(path))
    assert all(re.match(r'fpn\d\.|blocks\.\d+\.attn\.gamma_(q|kv)$', k)
               for k in report['missing']), report['missing']
    assert report['unexpected'] == [f'blocks.{i}.attn.temperature' for i in range(4)]
    qkv = ['qkv'] if layout == 'official' else ['q', 'k', 'v']
    assert sorted(report['dropped_classification']) == sorted(
        ['cls_token', 'norm.weight', 'norm.bias', 'head.weight', 'head.bias'] + [
            f'cls_attn_blocks.{i}.{n}' for i in range(2) for n in (
                'norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias', 'gamma1', 'gamma2',
                'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias',
                'attn.proj.weight', 'attn.proj.bias',
                *(f'attn.{p}.{w}' for p in qkv for w in ('weight', 'bias')))])
    trunk = clf.state_dict()
    loaded = model.state_dict()
    assert len(report['loaded']) == len(loaded) - len(report['missing'])
    for k in report['loaded']:
        assert torch.equal(loaded[k], trunk[k]), k


@pytest.mark.parametrize('layout', LAYOUTS)
def test_convert_tool_handles_every_layout(tmp_path, layout):
    """tools/convert_checkpoint.py's function: the arch read off the file, the
    classification parts and temperatures dropped, the result an init_cfg file."""
    _, _, src = xcit_checkpoint(tmp_path, layout)
    result = convert_checkpoint(str(src))
    assert result['meta']['arch'] == dict(XCIT)
    assert result['report']['dropped_xcit_only'] == [
        f'blocks.{i}.attn.temperature' for i in range(4)]
    assert 'cls_token' in result['meta']['dropped'] and 'head.weight' in result['meta']['dropped']
    dst = tmp_path / 'ufo.pth'
    save_converted(result, str(dst))
    report = load_pretrained(UFOViT(arch=XCIT), str(dst))
    assert report['unexpected'] == [] and report['dropped_classification'] == []
    assert len(report['loaded']) == len(result['state_dict'])


def test_convert_tool_command_line_on_an_mmpretrain_checkpoint(tmp_path):
    _, _, src = xcit_checkpoint(tmp_path, 'mmpretrain')
    dst = tmp_path / 'out' / 'ufo.pth'
    out = run_tool('convert_checkpoint.py', src, dst, timeout=300)
    assert 'dropped 41 classification-only and 4 XCiT-only' in out.stdout
    assert set(safe_torch_load(dst)) == {'state_dict', 'meta'}
