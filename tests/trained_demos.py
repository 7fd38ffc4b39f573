"""The demo configs trained by the training tools, once per test session
(the session fixtures ``seg_demo``, ``det_demo`` and ``cls_demo`` of
tests/conftest.py), on small synthetic data in the session's temporary folder.

Tests read the work dirs; a test that writes into one (``--resume`` in place)
works on :meth:`TrainedDemo.copy_work_dir` instead.

- seg: the UperNet demo by the project's tools/train.py, ``SEG_ITERS``
  iterations without the warm-up, enough to fit its ``SEG_TRAIN`` training
  images (tests/tools/test_seg_tools.py compares it with the initial weights);
- det: the Mask R-CNN demo by mmdet's own tools/train.py, ``DET_ITERS``
  iterations, every detection kept at validation (score threshold 0);
- cls: the classifier demo by mmpretrain's own tools/train.py, ``CLS_ITERS``
  iterations.
"""
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.tool_runner import REPO, tool_log

DEMOS = REPO / 'configs/ufo_vit/demo'
SEG_DEMO = DEMOS / 'upernet_ufo-vit-demo_synthetic.py'
DET_DEMO = DEMOS / 'mask-rcnn_ufo-vit-demo_synthetic.py'
CLS_DEMO = DEMOS / 'ufo-vit-cls-demo_synthetic.py'


def upstream_tools(package: str) -> Path:
    """The tools/ folder an OpenMMLab wheel installs (``mmseg/.mim/tools``)."""
    return Path(__import__(package).__file__).parent / '.mim' / 'tools'


SEG_ITERS = 20
SEG_IMG = 128  # the demo's training size (its RandomResize is around it)
SEG_TRAIN = 4
SEG_VAL = 2
DET_ITERS = 2
CLS_ITERS = 4
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def seg_data_options(data_root, iters=SEG_ITERS) -> list:
    """--cfg-options values of the seg demo: the data under ``data_root``,
    ``iters`` iterations through its one schedule knob (None: the config's
    default schedule)."""
    schedule = [] if iters is None else [f'train_cfg.max_iters={iters}']
    return [f'{loader}.dataset.data_root={data_root}' for loader in LOADERS] + schedule


def det_data_options(root) -> list:
    """--cfg-options values of the det demo: the synthetic COCO under ``root``."""
    ann = Path(root) / 'annotations' / 'instances_val2017.json'
    return [f'{loader}.dataset.data_root={root}/' for loader in LOADERS] + [
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


def cls_data_options(data_root, iters=CLS_ITERS, batch=8) -> list:
    """--cfg-options values of the cls demo: the data under ``data_root``,
    ``iters`` iterations, ``batch`` images per training step."""
    return [f'{loader}.dataset.data_root={data_root}' for loader in LOADERS] + [
        f'train_cfg.max_iters={iters}', f'train_dataloader.batch_size={batch}']


@dataclass(frozen=True)
class TrainedDemo:
    """A demo config trained ``iters`` iterations into ``work_dir`` on the data
    under ``data_root``; ``log`` is the training tool's stdout + stderr."""
    config: Path
    data_root: Path
    work_dir: Path
    iters: int
    log: str

    @property
    def checkpoint(self) -> Path:
        return self.work_dir / f'iter_{self.iters}.pth'

    def copy_work_dir(self, dest) -> Path:
        """A copy of the work dir at ``dest`` whose ``last_checkpoint`` names the
        copied checkpoint (mmengine writes an absolute path there)."""
        dest = Path(dest)
        shutil.copytree(self.work_dir, dest)
        (dest / 'last_checkpoint').write_text(str(dest / self.checkpoint.name))
        return dest


def train_seg_demo(tmp: Path) -> TrainedDemo:
    from ufo_mm.datasets import make_ade20k
    root = make_ade20k(tmp / 'data', num_train=SEG_TRAIN, num_val=SEG_VAL, img_size=SEG_IMG)
    work_dir = tmp / 'work'
    # no warm-up (the demo's lasts 100 iterations), so that SEG_ITERS iterations learn
    log = tool_log('train.py', SEG_DEMO, '--work-dir', work_dir, '--cfg-options',
                   *seg_data_options(root), 'param_scheduler.0.start_factor=1.0')
    return TrainedDemo(SEG_DEMO, Path(root), work_dir, SEG_ITERS, log)


def train_det_demo(tmp: Path) -> TrainedDemo:
    from ufo_mm.datasets import make_coco
    root = tmp / 'synthetic_coco'
    make_coco(root, num_train=4, num_val=2, img_size=128, max_objects=3)
    work_dir = tmp / 'work'
    log = tool_log(upstream_tools('mmdet') / 'train.py', DET_DEMO, '--work-dir', work_dir,
                   '--cfg-options', f'train_cfg.max_iters={DET_ITERS}',
                   'default_hooks.logger.interval=1', 'model.test_cfg.rcnn.score_thr=0',
                   *det_data_options(root))
    return TrainedDemo(DET_DEMO, root, work_dir, DET_ITERS, log)


def train_cls_demo(tmp: Path) -> TrainedDemo:
    from ufo_mm.datasets import make_imagenet
    root = make_imagenet(tmp / 'inet', num_train=16, num_val=10)
    work_dir = tmp / 'work'
    log = tool_log(upstream_tools('mmpretrain') / 'train.py', CLS_DEMO, '--work-dir', work_dir,
                   '--cfg-options', *cls_data_options(root))
    return TrainedDemo(CLS_DEMO, Path(root), work_dir, CLS_ITERS, log)


def save_initial_weights(config, path, cfg_options=None, init_weights=True) -> Path:
    """The config's model before any training, saved as a checkpoint with its
    dataset meta: as initialised (``init_weights``, what training starts from),
    else as constructed."""
    import torch

    from ufo_mm.builder import build_model
    with torch.random.fork_rng():  # the same weights every time, the caller's RNG untouched
        torch.manual_seed(0)
        model = build_model(str(config), cfg_options=cfg_options)
        if init_weights:
            model.init_weights()
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(model.dataset_meta))), path)
    return Path(path)


def evaluate(config, checkpoint, work_dir, cfg_options) -> dict:
    """The metrics of mmengine's test loop (what tools/test.py runs) on
    ``checkpoint``, in this process under the config's default scope."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(cfg_options)
    cfg.work_dir, cfg.load_from, cfg.log_level = str(work_dir), str(checkpoint), 'WARNING'
    cfg.experiment_name = f'evaluate_{Path(checkpoint).stem}_{id(cfg)}'  # unique per call
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return {k: float(v) for k, v in Runner.from_cfg(cfg).test().items()}


def last_metric(log: str, key: str) -> float:
    """The last value of ``key`` (``mIoU``, ``coco/bbox_mAP``) mmengine logged."""
    found = re.findall(rf'{re.escape(key)}: (-?[0-9.]+)', log)
    assert found, f'no {key} in the log:\n{log[-3000:]}'
    return float(found[-1])
