"""The transfer experiment: do classification-pretrained weights help the dense
demos, at the training size and on larger images?

1. Synthetic data: COCO and ADE20K as the demo makes them, and the ImageNet-layout
   classification set (one shape per 64-px image).
2. Pretraining: the demo classifier (``configs/ufo_vit/demo/ufo-vit-cls-demo_synthetic.py``,
   the dense demos' arch) with UFO attention, and the same with XCiT's XCA
   attention, the same iterations each; top-1 on the unseen split.
3. The XCA classifier converted into a UFO-ViT backbone by
   ``tools/convert_checkpoint.py`` (XCiT's temperatures dropped, UFO's XNorm
   scales new): the "start from XCiT weights" path.
4. Fine-tuning: the Mask R-CNN and UperNet demos from scratch, from the UFO
   classifier's checkpoint as mmpretrain writes it, and from the converted XCA
   one; the same iterations, data and seed. Each is evaluated on the held-out
   split at the training size and on composed images ``--scales`` times larger.
5. ``WORK_DIR/transfer.md``: the tables, with which start is best per column.

Every model step runs the project's tools in a subprocess, as the demo does
(``demo.pipeline``), and a failing step stops the run with a non-zero exit.
"""
import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

from .pipeline import (ROOT, StepFailed, derived_config, det_config, highres, make_data,
                       run_tool, seg_config, train_and_test)
from .report import markdown_table, write_report

CLS_CONFIG = ROOT / 'configs/ufo_vit/demo/ufo-vit-cls-demo_synthetic.py'
# how each dense run starts: (name in the table, pretraining it takes weights from)
STARTS = (('scratch', None), ('UFO-pretrained', 'ufo'), ('XCA-pretrained, converted', 'xca'))
TASKS = {  # task: (config builder, metric key of tools/test.py, of infer_highres, scale)
    'Mask R-CNN': (det_config, 'coco/bbox_mAP', 'bbox_mAP', 1.0),
    'UperNet': (seg_config, 'mIoU', 'mIoU', 100.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog='tools/transfer_experiment.py', description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', default='work_dirs/transfer', help='outputs and transfer.md')
    p.add_argument('--data-dir', default='data/transfer', help='where synthetic data is written')
    p.add_argument('--cls-iters', type=int, default=1000, help='pretraining iterations')
    p.add_argument('--cls-num-train', type=int, default=2000, help='classification images')
    p.add_argument('--cls-num-val', type=int, default=500, help='classification val images')
    p.add_argument('--det-iters', type=int, default=500, help='Mask R-CNN fine-tuning iterations')
    p.add_argument('--seg-iters', type=int, default=800, help='UperNet fine-tuning iterations')
    p.add_argument('--img-size', type=int, default=128, help='dense training image size')
    p.add_argument('--num-train', type=int, default=400, help='dense training images per task')
    p.add_argument('--num-val', type=int, default=100, help='dense validation images per task')
    p.add_argument('--scales', type=int, nargs='+', default=[4, 8],
                   help='larger evaluation images, as factors of --img-size')
    p.add_argument('--seed', type=int, default=0, help='training data seed (validation: +1000)')
    p.add_argument('--threads', type=int, default=None, help='torch threads per step')
    p.add_argument('--quick', action='store_true',
                   help='a smoke run of a few iterations on tiny data (minutes, numbers '
                        'meaningless)')
    args = p.parse_args(argv)
    args.arch = None  # the demo arch, shared by classifier and dense models
    if args.quick:
        args.cls_iters, args.det_iters, args.seg_iters = 4, 3, 3
        args.cls_num_train, args.cls_num_val = 10, 5
        args.num_train, args.num_val, args.img_size, args.scales = 6, 3, 96, [2]
    for name in ('cls_iters', 'det_iters', 'seg_iters'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


def cls_config(data_root: Path, out: Path, attn_type: str, iters: int) -> Path:
    """The demo classifier on ``data_root`` with ``attn_type`` attention."""
    lines = [f'_data = {str(data_root)!r}',
             'train_dataloader = dict(dataset=dict(data_root=_data))',
             'val_dataloader = dict(dataset=dict(data_root=_data))',
             'test_dataloader = val_dataloader',
             f'model = dict(backbone=dict(attn_type={attn_type!r}))']
    return derived_config(CLS_CONFIG, out, '\n'.join(lines), iters)


def pretrain(args, data_root: Path, work: Path) -> Dict[str, dict]:
    """Both classifiers trained and tested; the XCA one converted. Returns
    {'ufo' | 'xca': {'checkpoint', 'top1', 'minutes'}}."""
    out = {}
    for attn in ('ufo', 'xca'):
        t = time.time()
        cfg = cls_config(data_root, work / 'configs' / f'cls_{attn}.py', attn, args.cls_iters)
        ckpt, metrics = train_and_test(f'cls_{attn}', cfg, work / f'cls_{attn}', args.threads)
        out[attn] = dict(checkpoint=ckpt, top1=metrics['accuracy/top1'],
                         minutes=(time.time() - t) / 60)
    converted = work / 'cls_xca' / 'ufo-vit_from-xca.pth'
    run_tool(['tools/convert_checkpoint.py', out['xca']['checkpoint'], converted],
             work / 'cls_xca' / 'convert.out', args.threads)
    out['xca']['checkpoint'] = converted
    return out


def fine_tune(args, task: str, data_root: Path, start: str, init, work: Path) -> dict:
    """One dense run: {'1x': metric, '<s>x': metric per scale, 'minutes'}."""
    build, test_key, highres_key, scale = TASKS[task]
    name = f"{task.split()[0].lower().replace('-', '')}_{start.split()[0].split('-')[0].lower()}"
    t = time.time()
    cfg = build(args, data_root, work / 'configs' / f'{name}.py', init)
    ckpt, metrics = train_and_test(name, cfg, work / name, args.threads)
    row = {'1x': metrics[test_key], 'minutes': (time.time() - t) / 60}
    sizes = [str(args.img_size * s) for s in args.scales]
    for s, r in zip(args.scales, highres(cfg, ckpt, sizes, work / name / 'highres', args.threads)):
        row[f'{s}x'] = r[highres_key] * scale
    return row


def transfer_table(results: Dict[str, Dict[str, dict]], scales: Sequence[int]) -> str:
    """``results[task][start]`` rows as markdown: the metric at 1x and each scale,
    the best start of each task and column in bold, and whether each pretrained
    start beats scratch there."""
    columns = ['1x'] + [f'{s}x' for s in scales]
    rows = []
    for task, by_start in results.items():
        best = {c: max(r[c] for r in by_start.values()) for c in columns}
        for start, r in by_start.items():
            cells = [f'**{r[c]:.4g}**' if r[c] == best[c] else f'{r[c]:.4g}' for c in columns]
            if start == 'scratch':
                verdict = '-'
            else:
                verdict = ', '.join(f"{c} {'yes' if r[c] > by_start['scratch'][c] else 'no'}"
                                    for c in columns)
            rows.append([task, start, *cells, f"{r['minutes']:.1f}", verdict])
    return markdown_table(['task', 'start', *columns, 'fine-tune min', 'beats scratch at'], rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = (ROOT / args.out).resolve()
    data_dir = (ROOT / args.data_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.time()
    try:
        from ufo_mm.datasets import make_imagenet
        coco, ade = make_data(args, data_dir)
        inet = make_imagenet(data_dir / 'imagenet', args.cls_num_train, args.cls_num_val,
                             seed=args.seed)
        pretrained = pretrain(args, inet, work)
        results: Dict[str, Dict[str, dict]] = {}
        for task, data_root in (('Mask R-CNN', coco), ('UperNet', ade)):
            results[task] = {
                start: fine_tune(args, task, data_root, start,
                                 pretrained[key]['checkpoint'] if key else None, work)
                for start, key in STARTS}
    except (StepFailed, KeyError, FileNotFoundError) as e:
        print(f'\ntransfer experiment FAILED: {e}', file=sys.stderr)
        return 1
    cls_rows: List[list] = [[f'{attn.upper()} attention', v['top1'], f"{v['minutes']:.1f}"]
                            for attn, v in pretrained.items()]
    metrics = 'Mask R-CNN: bbox mAP; UperNet: mIoU (%)'
    sections = [
        (f'Pretraining ({args.cls_iters} iterations, {args.cls_num_train} images of 64 px)',
         markdown_table(['classifier', 'top-1 (%) on the unseen split', 'minutes'], cls_rows)),
        (f'Fine-tuning ({args.det_iters} / {args.seg_iters} iterations, {args.num_train} images '
         f'of {args.img_size} px; {metrics})', transfer_table(results, args.scales)),
        ('Run', f'Total {(time.time() - t0) / 60:.1f} min; configs, logs and checkpoints in '
                f'`{work}`. Command: `python tools/transfer_experiment.py '
                f"{' '.join(argv if argv is not None else sys.argv[1:])}`"),
    ]
    report = write_report(work / 'transfer.md', 'UFO-ViT transfer experiment', sections)
    print(f'\nreport: {report}\n' + transfer_table(results, args.scales))
    return 0
