"""Train a detector or segmentor config (mmdet or mmseg) with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp [--amp-dtype D]]
                                 [--cfg-options k=v ...] [--launcher pytorch]

Behaves like mmdet's and mmseg's own tools/train.py; those work too once the
config has ``custom_imports = dict(imports=['ufo_mm'])``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.apis.runner import add_common_args, build_runner, runner_config  # noqa: E402


def parse_args(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                        'when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: on a GPU AmpOptimWrapper in bf16 where the GPU '
                        'has it, else fp16 with dynamic loss scaling; on the CPU bf16 where '
                        'it is native, else fp32 (the log says which)')
    parser.add_argument('--amp-dtype', choices=('auto', 'fp16', 'bf16'), default='auto',
                        help='with --amp: force fp16 or bf16 instead of the automatic choice')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch size')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = runner_config(args)
    from ufo_mm.engine.resume import add_rng_state_hook
    add_rng_state_hook(cfg)  # checkpoints carry RNG states, so --resume is exact
    if args.amp:
        from ufo_mm.engine import enable_amp
        enable_amp(cfg, args.amp_dtype)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
