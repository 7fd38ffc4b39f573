"""Evaluate a checkpoint on a detector or segmentor config (mmdet or mmseg).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
                         [--out FILE] [--cfg-options k=v ...] [--launcher pytorch]

Prints the config's metrics (bbox/segm mAP, mIoU) like mmdet's and mmseg's
own tools/test.py.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.apis.runner import add_common_args, build_runner, runner_config  # noqa: E402
from ufo_mm.builder import library_of  # noqa: E402


def parse_args(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='write pictures of predictions into this folder '
                        '(relative to the run\'s log folder for mmdet)')
    parser.add_argument('--out', help='dump raw predictions to this pickle file')
    return parser.parse_args(argv)


def enable_show(cfg, show_dir: str):
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show-dir needs a visualization hook in default_hooks')
    hook['draw'] = True
    hook['interval'] = 1
    if library_of(cfg) == 'mmdet':
        hook['test_out_dir'] = show_dir
    else:
        cfg.visualizer['save_dir'] = show_dir
        cfg.visualizer.setdefault('vis_backends', [dict(type='LocalVisBackend')])


def main(argv=None):
    args = parse_args(argv)
    cfg = runner_config(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_show(cfg, args.show_dir)
    if args.out:
        dump = dict(type='DumpDetResults' if library_of(cfg) == 'mmdet' else 'DumpResults',
                    out_file_path=args.out)
        cfg.test_evaluator = ([cfg.test_evaluator, dump]
                              if isinstance(cfg.test_evaluator, dict)
                              else list(cfg.test_evaluator) + [dump])
    runner = build_runner(cfg)
    runner.test()


if __name__ == '__main__':
    main()
