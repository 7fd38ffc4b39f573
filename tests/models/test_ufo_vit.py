"""UFOViT backbone: arch zoo, shapes at any resolution, freezing, precision, errors."""
import math

import pytest
import torch

from ufo_mm.models import ARCH_ZOO, UFOViT, arch_names, resolve_arch

# XCiT classification models, p16, in parameters (docs/model.md section 4).
XCIT_CLS_PARAMS = {'tiny_12': 6.7e6, 'small_12': 26e6, 'small_24': 48e6, 'medium_24': 84e6}


def classification_only_params(C, num_classes=1000):
    """XCiT's parts that a dense backbone drops: two class-attention blocks
    (2 LayerNorms, qkv + proj, MLP ratio 4, two layer scales), the class
    token, the final LayerNorm and the head."""
    ca_block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (8 * C * C + 5 * C) + 2 * C
    return 2 * ca_block + C + 2 * C + (C * num_classes + num_classes)


def trunk_params(model):
    parts = [model.patch_embed, model.pos_embed, model.blocks]
    return sum(p.numel() for m in parts for p in m.parameters())


@pytest.mark.parametrize('size', sorted(ARCH_ZOO))
@pytest.mark.parametrize('patch', [16, 8])
def test_trunk_params_match_paper(size, patch):
    model = UFOViT(arch=f'{size}_p{patch}')
    C = ARCH_ZOO[size]['embed_dims']
    expected = XCIT_CLS_PARAMS[size] - classification_only_params(C)
    assert trunk_params(model) == pytest.approx(expected, rel=0.03)


def _small(**kw):
    kw.setdefault('arch', dict(embed_dims=64, num_heads=4, depth=4, out_indices=(0, 1, 2, 3)))
    return UFOViT(**kw).eval()


def expected_shapes(B, C, H, W):
    return [(B, C, math.ceil(H / s), math.ceil(W / s)) for s in (4, 8, 16, 32)]


@pytest.mark.parametrize('patch', [16, 8])
@pytest.mark.parametrize('shape', [(2, 3, 224, 224), (1, 3, 512, 512), (1, 3, 333, 517),
                                   (1, 3, 64, 1000)])
def test_output_strides_any_resolution(patch, shape):
    model = _small(patch_size=patch)
    with torch.no_grad():
        outs = model(torch.randn(shape))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == expected_shapes(shape[0], 64, *shape[2:])


@pytest.mark.parametrize('arch', ['small_12_p16', 'tiny_12_p8'])
def test_real_arch_shapes_odd_input(arch):
    model = UFOViT(arch=arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 333, 517))
    C = resolve_arch(arch)['embed_dims']
    assert [tuple(o.shape) for o in outs] == expected_shapes(1, C, 333, 517)


def test_same_weights_any_input_size():
    torch.manual_seed(0)
    a = _small()
    b = _small()
    result = b.load_state_dict(a.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any('pos' in k and 'token_projection' not in k for k in a.state_dict()), \
        'no position table tied to an input size'
    with torch.no_grad():
        small = b(torch.randn(1, 3, 224, 224))
        large = b(torch.randn(1, 3, 1024, 1024))
    assert small[0].shape[-1] == 56 and large[0].shape[-1] == 256
    assert all(torch.isfinite(o).all() for o in small + large)


def test_translation_consistency_of_position_encoding():
    """The encoding depends on the grid only: equal grids give equal encodings."""
    model = _small()
    g1 = model.pos_embed(torch.zeros(1, 64, 7, 9))
    g2 = model.pos_embed(torch.zeros(3, 64, 7, 9, dtype=torch.float64))
    assert g1.shape == (1, 64, 7, 9)
    torch.testing.assert_close(g1, g2.float())


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = _small(drop_path_rate=0.1).train()
    outs = model(torch.randn(2, 3, 96, 128))
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and
               (p.grad is None or not p.grad.abs().sum() > 0)]
    assert no_grad == []


def test_with_cp_same_output_and_grads():
    torch.manual_seed(0)
    a = _small(with_cp=False).train()
    b = _small(with_cp=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    la = sum(o.sum() for o in a(x))
    lb = sum(o.sum() for o in b(x))
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_frozen_stages_and_norm_eval_hold_after_train():
    model = _small(frozen_stages=2, norm_eval=True)
    model.train()
    frozen = [model.patch_embed, model.pos_embed, model.blocks[0], model.blocks[1]]
    for m in frozen:
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())
    assert model.blocks[2].training
    assert all(p.requires_grad for p in model.blocks[2].parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not bn.training for bn in bns)
    # BN statistics must not move in a training forward.
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, bns))


def test_frozen_stages_zero_freezes_embedding_only():
    model = _small(frozen_stages=0).train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert all(p.requires_grad for p in model.blocks.parameters())


def test_blocks_after_last_output_are_not_built():
    model = UFOViT(arch='tiny_12_p16', out_indices=(1, 2, 3, 5))
    assert len(model.blocks) == 6


@pytest.mark.parametrize('attn_type', ['ufo', 'softmax', 'xca'])
def test_attn_type_switch(attn_type):
    model = _small(attn_type=attn_type)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == expected_shapes(1, 64, 64, 96)
    base = {k for k in _small().state_dict() if '.attn.' not in k}
    assert base == {k for k in model.state_dict() if '.attn.' not in k}


def test_arch_aliases_and_custom_dict():
    assert resolve_arch('S12/16') == resolve_arch('small_12_p16') == resolve_arch('s12')
    assert resolve_arch('t12_p8')['patch_size'] == 8
    assert resolve_arch('medium_24_p8')['embed_dims'] == 512
    assert resolve_arch('small_24')['out_indices'] == (7, 11, 15, 23)
    custom = resolve_arch(dict(embed_dims=96, num_heads=3, depth=6))
    assert custom['patch_size'] == 16 and len(custom['out_indices']) == 4
    assert 'small_12_p16' in arch_names()


def test_unknown_arch_lists_valid_names():
    with pytest.raises(KeyError) as e:
        UFOViT(arch='huge_48')
    assert 'small_12_p16' in str(e.value) and 'tiny_12' in str(e.value)
    with pytest.raises(KeyError, match='num_heads'):
        UFOViT(arch=dict(embed_dims=64, depth=2))


def test_bad_inputs_raise_clear_errors():
    model = _small()
    with pytest.raises(ValueError, match='3 input channels, got 1'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='smaller than one 16x16 patch'):
        model(torch.randn(1, 3, 8, 64))
    x = torch.randn(1, 3, 64, 64)
    x[0, 0, 3, 3] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        model(x)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 64, 64))


def test_bad_constructor_arguments():
    with pytest.raises(IndexError, match='out of range'):
        UFOViT(arch='tiny_12', out_indices=(3, 5, 7, 12))
    with pytest.raises(ValueError, match='4 blocks'):
        UFOViT(arch='tiny_12', out_indices=(3, 5))
    with pytest.raises(ValueError, match='attn_type'):
        UFOViT(arch='tiny_12', attn_type='linear')
    with pytest.raises(ValueError, match='patch_size'):
        UFOViT(arch='tiny_12', patch_size=14)
    with pytest.raises(ValueError, match='not both'):
        UFOViT(arch='tiny_12', pretrained='a.pth', init_cfg=dict(type='Pretrained',
                                                                 checkpoint='a.pth'))


def test_pretrained_maps_to_init_cfg():
    model = UFOViT(arch='tiny_12', pretrained='x.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='x.pth')


def test_negative_out_indices():
    assert UFOViT(arch='tiny_12', out_indices=(3, 5, 7, -1)).out_indices == (3, 5, 7, 11)


@pytest.mark.slow
def test_bf16_autocast_2048_close_to_fp32():
    torch.manual_seed(0)
    model = UFOViT(arch='small_12_p16')
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 2048, 2048)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
    for o, r in zip(out, ref):
        assert torch.isfinite(o).all()
        # bf16 has an 8-bit mantissa; over 12 blocks the relative error stays small.
        assert ((o.float() - r).norm() / r.norm()).item() < 0.05


@pytest.mark.parametrize('patch', [16, 8])
@pytest.mark.parametrize('train', [True, False])
def test_outputs_are_contiguous_nchw(patch, train):
    """Detection heads' ops read raw memory: mmcv's CPU RoIAlign takes
    channels_last (NHWC-strided) maps for NCHW and pools the wrong pixels."""
    from mmcv.ops import roi_align
    model = _small(patch_size=patch).train(train)
    with torch.set_grad_enabled(train):
        outs = model(torch.randn(2, 3, 96, 128))
    assert all(o.is_contiguous() for o in outs)
    rois = torch.tensor([[0, 3., 5., 20., 17.], [1, 1., 2., 30., 23.]])
    pooled = roi_align(outs[0], rois, (7, 7), 1.0, 2, 'avg', True)
    reference = roi_align(outs[0].detach().clone(memory_format=torch.contiguous_format),
                          rois, (7, 7), 1.0, 2, 'avg', True)
    torch.testing.assert_close(pooled, reference)
