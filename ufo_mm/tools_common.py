"""Shared glue of ``tools/train.py`` and ``tools/test.py``: which library a config
belongs to, work dirs, and the command-line overrides both tools accept."""
import os
import os.path as osp

from mmengine.config import Config, DictAction


def add_common_args(parser):
    parser.add_argument('config', help='config file (mmdet or mmseg, with UFO-ViT or not)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (see tools/dist_train.sh)')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def load_config(args) -> Config:
    """Config with overrides, launcher and work dir applied; ufo_mm imported."""
    import ufo_mm  # noqa: F401  registers UFOViT even if the config forgets custom_imports
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def library_of(cfg: Config) -> str:
    """'mmdet' or 'mmseg', from the config's default_scope."""
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f"config default_scope must be 'mmdet' or 'mmseg', got {scope!r}")
    return scope


def build_runner(cfg: Config):
    """The Runner a config asks for (its ``runner_type`` or mmengine's)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from ufo_mm.engine.distributed import prepare_distributed
    prepare_distributed(cfg)  # --launcher pytorch on CPU-only machines (gloo)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
