"""Pretrained loading: XCiT/UFO-ViT classification checkpoints map onto UFOViT;
offline conversion of a file (``tools/convert_checkpoint.py``) on fabricated
XCiT classification checkpoints (official facebookresearch/xcit and timm key
names)."""
import argparse

import pytest
import torch

from ufo_mm.models import UFOViT
from ufo_mm.models.checkpoint_convert import (ConversionError, conversion_summary,
                                              convert_checkpoint, convert_state_dict,
                                              load_pretrained, save_converted,
                                              unwrap_state_dict)
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
