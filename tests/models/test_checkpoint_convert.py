"""Pretrained loading: XCiT/UFO-ViT classification checkpoints map onto UFOViT."""
import pytest
import torch

from ufo_mm.models import UFOViT
from ufo_mm.models.checkpoint_convert import convert_state_dict, unwrap_state_dict

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
