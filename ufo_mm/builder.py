"""A detector or segmentor from its config, written once for every tool.

    from ufo_mm.builder import build_model
    model = build_model('configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py', 'iter_2000.pth')

mmdet's ``init_detector`` and mmseg's ``init_model`` each do part of this, with
their own quirks (SyncBN kept, the backbone's ``init_cfg`` kept or not depending
on ``cfg_options``, ``checkpoint['meta']`` required): one function here, the same
for both libraries.
"""
import copy
from pathlib import Path
from typing import Optional, Union

from mmengine.config import Config

LIBRARIES = ('mmdet', 'mmseg')


def library_of(cfg: Config) -> str:
    """'mmdet' or 'mmseg', from the config's default_scope."""
    scope = cfg.get('default_scope')
    if scope not in LIBRARIES:
        raise ValueError(f"config default_scope must be 'mmdet' or 'mmseg', got {scope!r}")
    return scope


def load_config(config: Union[str, Path, Config], cfg_options: Optional[dict] = None) -> Config:
    """The config (a file or a Config, copied) with ``cfg_options`` merged in.
    ``UFOViT`` is registered even if the config forgets ``custom_imports``:
    importing this module imported the ``ufo_mm`` package, which registers it
    (and installs the safe checkpoint loader)."""
    cfg = copy.deepcopy(config) if isinstance(config, Config) else Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def registry(scope: str, name: str = 'MODELS'):
    """A registry (MODELS, DATASETS, ...) of 'mmdet' or 'mmseg', with that default scope set."""
    import importlib

    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    return getattr(importlib.import_module(f'{scope}.registry'), name)


def dataset_metainfo(cfg: Config) -> dict:
    """``metainfo`` of the config's test dataset (classes, palette), built lazily
    (no annotation file is read); ``{}`` without a test dataset."""
    dataset = (cfg.get('test_dataloader') or {}).get('dataset')
    if not dataset:
        return {}
    dataset = dict(copy.deepcopy(dataset), lazy_init=True)
    return dict(registry(library_of(cfg), 'DATASETS').build(dataset).metainfo)


def build_model(config: Union[str, Path, Config], checkpoint: Optional[str] = None,
                device: str = 'cpu', cfg_options: Optional[dict] = None):
    """The model of an mmdet/mmseg config, in eval mode on ``device``.

    SyncBN becomes BN (one process, no process group). With ``checkpoint`` its
    weights are loaded (through mmengine, so the project's weights_only-safe
    loader applies) and the backbone's ``init_cfg`` is dropped; without, the
    weights are the modules' construction-time ones (call ``init_weights()``
    for the config's initialisation).

    The returned model carries ``model.cfg`` (the merged config) and
    ``model.dataset_meta``: the checkpoint's ``meta['dataset_meta']``, else the
    metainfo of the config's test dataset (:func:`dataset_metainfo`).
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.runner import load_checkpoint

    cfg = load_config(config, cfg_options)
    models = registry(library_of(cfg))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('pretrained', None)
    if checkpoint is not None:  # the checkpoint has the weights: no pretrained backbone
        model_cfg.get('backbone', {}).pop('init_cfg', None)
    model = models.build(model_cfg)
    meta = None
    if checkpoint is not None:
        loaded = load_checkpoint(model, checkpoint, map_location='cpu')
        meta = (loaded.get('meta') or {}).get('dataset_meta')
    if meta is None:
        meta = dataset_metainfo(cfg)
    model = revert_sync_batchnorm(model)
    model.dataset_meta = meta
    model.cfg = cfg
    return model.to(device).eval()


def blank_data_sample(library: str, H: int, W: int):
    """A DetDataSample / SegDataSample for one unannotated (H, W) input that is
    its own original size (no resize, no padding): what ``predict`` and tensor
    mode need to run on a bare tensor."""
    if library == 'mmdet':
        from mmdet.structures import DetDataSample
        return DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W),
                                           pad_shape=(H, W), batch_input_shape=(H, W),
                                           scale_factor=(1., 1.)))
    from mmseg.structures import SegDataSample
    return SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
                                       padding_size=[0] * 4))
