"""What the benchmark measures: the backbones and full models by name, how each
is built (random weights, eval mode), and the call one timed run of a case
makes (:func:`build_step`): an inference on a (batch, 3, H, W) input, or a
training step of a backbone, of the model or of ``torch.compile(model)``."""
import os.path as osp

from .harness import ROOT

# name -> how to build it and how its cost grows with the number of pixels P
# (time_exp / mem_exp: cost ~ P ** exp; used only to decide what to skip).
MODELS = {
    'ufo_s12': dict(label='UFO-ViT-S12/16', kind='backbone', time_exp=1, mem_exp=1),
    'ufo_t12': dict(label='UFO-ViT-T12/16', kind='backbone', time_exp=1, mem_exp=1),
    'swin_t': dict(label='Swin-T', kind='backbone', time_exp=1, mem_exp=1),
    'pvtv2_b2': dict(label='PVTv2-b2', kind='backbone', time_exp=2, mem_exp=2),
    'mit_b2': dict(label='MiT-b2', kind='backbone', time_exp=2, mem_exp=2),
    'vit_s': dict(label='ViT-S/16 (softmax)', kind='backbone', time_exp=2, mem_exp=2),
    'ufo_s12_softmax': dict(label='S12/16 softmax attn', kind='backbone', time_exp=2,
                            mem_exp=1),
    'ufo_s12_xca': dict(label='S12/16 XCA attn', kind='backbone', time_exp=1, mem_exp=1),
    'maskrcnn_ufo_s12': dict(label='Mask R-CNN UFO-S12/16', kind='detector', time_exp=1,
                             mem_exp=1),
    'upernet_ufo_s12': dict(label='UperNet UFO-S12/16', kind='segmentor', time_exp=1,
                            mem_exp=1),
}
REFERENCE = 'ufo_s12'
BACKBONES = [k for k, v in MODELS.items() if v['kind'] == 'backbone']
# what UFO-ViT-S12/16 is compared with: every backbone but itself and its smaller sibling
PEERS = [k for k in BACKBONES if k not in (REFERENCE, 'ufo_t12')]
FULL_MODELS = [k for k, v in MODELS.items() if v['kind'] != 'backbone']
# backbones whose constructor takes with_cp (activation checkpointing): the training table's
TRAIN_MODELS = ['ufo_s12', 'ufo_t12', 'swin_t']
DET_CONFIG = 'configs/ufo_vit/mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-3x_coco.py'
SEG_CONFIG = 'configs/ufo_vit/upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'
def _ufo(**kw):
    from ufo_mm.models import UFOViT
    return UFOViT(**kw)


def build_backbone(name: str, with_cp: bool = False):
    """The nn.Module of a backbone case, random weights, eval mode; ``with_cp``
    (activation checkpointing in training) for :data:`TRAIN_MODELS`."""
    if with_cp and name not in TRAIN_MODELS:
        raise ValueError(f'with_cp: only for {TRAIN_MODELS}, not {name!r}')
    if name == 'ufo_s12':
        m = _ufo(arch='small_12_p16', with_cp=with_cp)
    elif name == 'ufo_t12':
        m = _ufo(arch='tiny_12_p16', with_cp=with_cp)
    elif name == 'ufo_s12_softmax':
        m = _ufo(arch='small_12_p16', attn_type='softmax')
    elif name == 'ufo_s12_xca':
        m = _ufo(arch='small_12_p16', attn_type='xca')
    elif name == 'swin_t':
        from mmdet.models.backbones import SwinTransformer
        m = SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                            window_size=7, out_indices=(0, 1, 2, 3), with_cp=with_cp)
    elif name == 'pvtv2_b2':
        from mmdet.models.backbones import PyramidVisionTransformerV2
        m = PyramidVisionTransformerV2(embed_dims=64, num_layers=[3, 4, 6, 3],
                                       num_heads=[1, 2, 5, 8])
    elif name == 'mit_b2':
        from mmseg.models.backbones import MixVisionTransformer
        m = MixVisionTransformer(embed_dims=64, num_layers=[3, 4, 6, 3], num_heads=[1, 2, 5, 8])
    elif name == 'vit_s':
        from mmseg.models.backbones import VisionTransformer
        # img_size 224: a 14x14 position table, bicubically resized to the input's grid.
        m = VisionTransformer(img_size=224, patch_size=16, embed_dims=384, num_layers=12,
                              num_heads=6, out_indices=(2, 5, 8, 11))
    else:
        raise KeyError(f'unknown backbone {name!r}; valid: {BACKBONES}')
    m.eval()  # on its own line: mmdet's SwinTransformer.train() returns None
    return m


def _full_model_cfg(kind: str):
    """The det/seg model config: the project's config when it exists, else an inline one."""
    from mmengine.config import Config, ConfigDict

    path = osp.join(ROOT, DET_CONFIG if kind == 'detector' else SEG_CONFIG)
    if osp.exists(path):
        model = Config.fromfile(path).model
    else:
        base = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py' if kind == 'detector' else \
            'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
        model = _inline_base(base)
        model.backbone = ConfigDict(type='UFOViT', arch='small_12_p16')
        if kind == 'detector':
            model.neck.in_channels = [384] * 4
        else:
            model.decode_head.in_channels = [384] * 4
            model.auxiliary_head.in_channels = 384
    model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    model.backbone.pop('init_cfg', None)
    if kind == 'detector':
        # Score threshold 0 keeps the top 100 detections of random weights, so the
        # mask head and mask pasting run at full load (a trained model's worst case).
        model.test_cfg.rcnn.score_thr = 0.0
    else:
        model.test_cfg = dict(mode='whole')
    return model


def _inline_base(base: str):
    import importlib

    from mmengine.config import Config
    lib, rel = base.split('::')
    pkg = osp.dirname(importlib.import_module(lib).__file__)
    return Config.fromfile(osp.join(pkg, '.mim', 'configs', rel)).model


def build_full_model(name: str):
    """Mask R-CNN or UperNet with a UFO-ViT-S12/16 backbone, random weights, eval mode."""
    from mmengine.config import Config

    from ufo_mm.builder import build_model
    kind = MODELS[name]['kind']
    scope = 'mmdet' if kind == 'detector' else 'mmseg'
    return build_model(Config(dict(model=_full_model_cfg(kind), default_scope=scope)))


def case_label(case: dict) -> str:
    """The model's label, ``+cp`` with activation checkpointing, `` (compiled)``
    for ``torch.compile(model)``."""
    return (MODELS[case['model']]['label'] + (' +cp' if case.get('with_cp') else '')
            + (' (compiled)' if case.get('compile') else ''))


def build_step(case: dict):
    """The closure one timed run of ``case`` calls, with the model built for it:
    an inference (eval mode; :func:`make_forward`), or with ``mode='train'`` a
    training step of the backbone (:func:`make_train_step`; ``with_cp``
    passed to it); with ``compile=True`` of ``torch.compile(model)``, whose
    first call compiles."""
    import torch
    name, H, W, batch = case['model'], case['height'], case['width'], case.get('batch', 1)
    if MODELS[name]['kind'] == 'backbone':
        model = build_backbone(name, with_cp=case.get('with_cp', False))
    else:
        model = build_full_model(name)
    run = torch.compile(model) if case.get('compile') else model
    if case.get('mode', 'infer') == 'train':
        return make_train_step(model, run, torch.randn(batch, 3, H, W))
    return make_forward(name, run, H, W, batch)


def make_train_step(model, run, x):
    """A closure running one training step of the backbone ``model`` (put in
    train mode) through ``run`` (the model or its compiled form): forward with
    autograd on, loss = the sum of the outputs' means, backward, gradients set
    to None (as ``optimizer.zero_grad()``). No optimizer step: what it costs
    does not depend on the backbone's design."""
    import torch
    model.train()

    def step():
        with torch.enable_grad():
            sum(f.mean() for f in run(x)).backward()
        model.zero_grad(set_to_none=True)
    return step


def make_forward(name: str, model, H: int, W: int, batch: int = 1):
    """A closure running one inference of ``model`` on a (batch, 3, H, W) input."""
    import torch
    x = torch.randn(batch, 3, H, W)
    kind = MODELS[name]['kind']
    if kind == 'backbone':
        return lambda: model(x)
    from ufo_mm.builder import blank_data_sample
    if kind == 'detector':
        sample = blank_data_sample('mmdet', H, W)
        return lambda: model.predict(x, [sample], rescale=True)
    sample = blank_data_sample('mmseg', H, W)
    return lambda: model.predict(x, [sample])
