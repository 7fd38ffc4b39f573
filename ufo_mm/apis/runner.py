"""What ``tools/train.py`` and ``tools/test.py`` share: the command-line
arguments both accept, the config they make of them (overrides, launcher, work
dir) and the Runner it asks for."""
import os
import os.path as osp

from mmengine.config import Config, DictAction

from ufo_mm.builder import load_config


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


def runner_config(args) -> Config:
    """Config with overrides, launcher and work dir applied; ufo_mm imported."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config):
    """The Runner a config asks for (its ``runner_type`` or mmengine's)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from ufo_mm.engine.distributed import prepare_distributed
    prepare_distributed(cfg)  # --launcher pytorch on CPU-only machines (gloo)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
