"""UFOViTClassifier: XCiT's published sizes, XCiT's class attention (against a
transcription of the official code and against timm's XCiT), shapes, the
trunk shared with UFOViT, the mmpretrain backbone form, errors."""
import pytest
import torch
import torch.nn.functional as F

from ufo_mm.models import UFOViT
from ufo_mm.models.ufo_vit import ARCH_ZOO, UFOViTTrunk
from ufo_mm.models.ufo_vit_classifier import (ClassAttentionBlock, UFOViTClassifier,
                                              UFOViTClsBackbone)

# XCiT's ImageNet classifiers (1000 classes), parameters as its paper and
# model zoo publish them (p8 as its model zoo lists them).
XCIT_PUBLISHED = {
    ('tiny_12', 16): 6.7e6, ('small_12', 16): 26.2e6, ('small_24', 16): 47.6e6,
    ('medium_24', 16): 84.4e6, ('tiny_12', 8): 6.7e6, ('small_12', 8): 26.2e6,
    ('small_24', 8): 47.6e6, ('medium_24', 8): 84.3e6,
}
SMALL = dict(embed_dims=64, num_heads=4, depth=2, patch_size=8)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('size, patch', sorted(XCIT_PUBLISHED))
def test_params_match_xcit_published(size, patch):
    model = UFOViTClassifier(f'{size}_p{patch}')
    assert n_params(model) == pytest.approx(XCIT_PUBLISHED[size, patch], rel=0.03)


@pytest.mark.parametrize('size', sorted(ARCH_ZOO))
def test_params_are_timm_xcit_plus_ufo_scales(size):
    """Exactly XCiT's (as timm builds it) with XCA's one temperature per head
    and block replaced by UFO's two XNorm scales."""
    timm = pytest.importorskip('timm', reason='timm is not installed (requirements/constraints.txt '
                               'pins it; constraints-torch2.13-cpu.txt has no torchvision for it)')
    xcit = timm.create_model(f'xcit_{size}_p16_224', pretrained=False)
    model = UFOViTClassifier(f'{size}_p16')
    assert n_params(model) == n_params(xcit) + model.depth * model.num_heads


def official_class_attention_block(blk: ClassAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """facebookresearch/xcit's ClassAttentionBlock (tokens_norm=True) written
    out: one fused qkv projection of every token, attention of every query,
    the class token's row kept, in-place token updates."""
    B, N, C = x.shape
    h = blk.attn.num_heads
    xn = blk.norm1(x)
    w = torch.cat([blk.attn.q.weight, blk.attn.k.weight, blk.attn.v.weight])
    b = torch.cat([blk.attn.q.bias, blk.attn.k.bias, blk.attn.v.bias])
    q, k, v = F.linear(xn, w, b).reshape(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
    attn = ((q[:, :, 0:1] * k).sum(-1) * (C // h) ** -0.5).softmax(-1)  # (B, h, N)
    cls = blk.attn.proj((attn.unsqueeze(2) @ v).transpose(1, 2).reshape(B, 1, C))
    x = x + blk.gamma1 * torch.cat([cls, xn[:, 1:]], dim=1)
    x = blk.norm2(x)
    res = x
    cls = blk.gamma2 * blk.mlp.fc2(F.gelu(blk.mlp.fc1(x[:, 0:1])))
    return res + torch.cat([cls, x[:, 1:]], dim=1)


def test_class_attention_block_is_xcits():
    torch.manual_seed(0)
    blk = ClassAttentionBlock(64, 4, layer_scale_init_value=0.5).eval()
    for p in blk.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(2, 1 + 30, 64)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), official_class_attention_block(blk, x))


def test_xca_classifier_equals_timm_xcit():
    """With XCiT's attention, the classifier is XCiT: timm's model's weights
    load with strict key matching and give the same logits."""
    pytest.importorskip('timm', reason='timm is not installed')
    from timm.models.xcit import Xcit
    torch.manual_seed(0)
    xcit = Xcit(img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=4, eta=1.0,
                tokens_norm=True, num_classes=10).eval()
    for p in xcit.parameters():
        p.data.normal_(0, 0.2)
    model = UFOViTClassifier(SMALL, num_classes=10, attn_type='xca').eval()
    model.load_state_dict(xcit.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), xcit(x))


@pytest.mark.parametrize('shape', [(2, 3, 64, 64), (1, 3, 45, 77), (1, 3, 8, 8)])
def test_logits_at_any_resolution(shape):
    model = UFOViTClassifier(SMALL, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 7) and torch.isfinite(out).all()


def test_no_head_returns_the_class_token():
    torch.manual_seed(0)
    model = UFOViTClassifier(SMALL, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model(x)
    assert feats.shape == (2, 64)
    # the final LayerNorm (unit weight, zero bias at init): zero mean, unit variance
    torch.testing.assert_close(feats.mean(-1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.var(-1, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)


def test_cls_backbone_is_the_classifier_without_head():
    torch.manual_seed(0)
    clf = UFOViTClassifier(SMALL, num_classes=5).eval()
    backbone = UFOViTClsBackbone(SMALL).eval()
    result = backbone.load_state_dict(clf.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == ['head.weight', 'head.bias']
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = backbone(x)
        assert isinstance(out, tuple) and len(out) == 1
        torch.testing.assert_close(out[0], clf.forward_features(x))
        torch.testing.assert_close(clf.head(out[0]), clf(x))


def test_trunk_is_shared_with_the_dense_backbone():
    clf = UFOViTClassifier('tiny_12_p16')
    dense = UFOViT('tiny_12_p16')
    assert isinstance(clf, UFOViTTrunk) and isinstance(dense, UFOViTTrunk)
    trunk = {k for k in dense.state_dict() if not k.startswith('fpn')}
    cls_only = set(clf.state_dict()) - trunk
    assert trunk <= set(clf.state_dict())
    assert all(k.startswith(('cls_token', 'cls_attn_blocks.', 'norm.', 'head.')) for k in cls_only)
    assert {k for k in cls_only if k.startswith('cls_attn_blocks.')} == {
        f'cls_attn_blocks.{i}.{n}' for i in range(2) for n in (
            'norm1.weight', 'norm1.bias', 'attn.q.weight', 'attn.q.bias', 'attn.k.weight',
            'attn.k.bias', 'attn.v.weight', 'attn.v.bias', 'attn.proj.weight', 'attn.proj.bias',
            'norm2.weight', 'norm2.bias', 'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight',
            'mlp.fc2.bias', 'gamma1', 'gamma2')}


@pytest.mark.parametrize('arch, eta', [('tiny_12_p16', 1.0), ('small_24_p8', 1e-5)])
def test_layer_scale_of_class_attention_follows_depth(arch, eta):
    model = UFOViTClassifier(arch)
    for blk in model.cls_attn_blocks:
        assert torch.all(blk.gamma1 == eta) and torch.all(blk.gamma2 == eta)
    assert torch.all(model.blocks[0].gamma1 == eta)


def test_init_draws_the_class_token():
    torch.manual_seed(0)
    model = UFOViTClassifier(dict(SMALL, embed_dims=512, num_heads=8))
    assert torch.all(model.cls_token == 0)
    model.init_weights()
    assert 0.015 < model.cls_token.std().item() < 0.025


def test_gradients_reach_every_parameter():
    model = UFOViTClassifier(SMALL, num_classes=3, drop_path_rate=0.1)
    model.init_weights()  # a zero class token would give its first query no gradient
    model.train()
    loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


def test_frozen_trunk_leaves_class_parts_trainable():
    model = UFOViTClassifier(SMALL, num_classes=3, frozen_stages=2).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(('patch_embed.', 'pos_embed.', 'blocks.'))}
    assert not model.blocks[1].local_mp.bn.training


@pytest.mark.parametrize('schedule, rates', [('linear', [0., 0.1]), ('constant', [0.1, 0.1])])
def test_drop_path_schedule(schedule, rates):
    model = UFOViTClassifier(SMALL, drop_path_rate=0.1, drop_path_schedule=schedule)
    assert [blk.drop_path.p for blk in model.blocks] == pytest.approx(rates)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="drop_path_schedule must be 'linear' or 'constant'"):
        UFOViTClassifier(SMALL, drop_path_schedule='cosine')
    with pytest.raises(ValueError, match='num_classes must be an int >= 0'):
        UFOViTClassifier(SMALL, num_classes=-1)
    with pytest.raises(ValueError, match='num_cls_attn_blocks'):
        UFOViTClassifier(SMALL, num_cls_attn_blocks=1.5)
    with pytest.raises(TypeError, match='LinearClsHead'):
        UFOViTClsBackbone(SMALL, num_classes=10)
    with pytest.raises(KeyError, match='unknown UFO-ViT arch'):
        UFOViTClassifier('huge_48')
    model = UFOViTClassifier(SMALL).eval()
    with pytest.raises(ValueError, match='UFOViTClassifier was built for 3 input channels'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='smaller than one 8x8 patch'):
        model(torch.randn(1, 3, 4, 32))
