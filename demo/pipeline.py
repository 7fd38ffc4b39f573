"""The end-to-end demo: synthetic data -> UFO-ViT Mask R-CNN and UperNet trained
from scratch -> evaluation on a held-out split -> the same checkpoints on much
larger images -> a markdown report under ``work_dirs/demo/``.

Every model step runs the project's own command-line tools in a subprocess
(``tools/train.py``, ``tools/test.py``, ...), exactly as a user would, and
stops the demo with a non-zero exit at the first failure. It lives next to
``tools/`` (not in the ``ufo_mm`` package) because it drives them.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .logs import loss_curve, evaluation_metrics
from .report import markdown_table, plot_loss_curves, write_report

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = ROOT / 'configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py'
SEG_CONFIG = ROOT / 'configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py'

EPILOG = """\
Shrink or grow the demo:
  --det-iters / --seg-iters   training iterations (time grows linearly with them); the
                              defaults keep the whole demo near 15 minutes on 2 cores,
                              0 runs the demo configs' full learning-proof schedules
  --img-size                  training image size of the synthetic data (default 128)
  --num-train / --num-val     images per split
  --arch                      UFO-ViT size for both models: a zoo name such as
                              tiny_12_p16 or small_12_p8, or a JSON dict such as
                              '{"embed_dims": 96, "num_heads": 4, "depth": 6, "patch_size": 8}'
  --scales                    how many times larger the high-resolution images are
  --quick                     a 2-3 minute smoke run (few iterations, tiny data)

The same configs on real data: the demo configs are ordinary mmdet/mmseg configs
(configs/ufo_vit/demo/). For COCO and ADE20K use the full recipes instead:
  python tools/train.py configs/ufo_vit/mask-rcnn/<config>.py    # data in data/coco
  python tools/train.py configs/ufo_vit/upernet/<config>.py      # data in data/ade/ADEChallengeData2016
or point a demo config at another copy of the data with
  --cfg-options train_dataloader.dataset.data_root=/path/to/coco/ ...
(see docs/detection.md and docs/segmentation.md).
"""


class StepFailed(RuntimeError):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog='tools/demo.py', description='UFO-ViT end to end: synthetic COCO/ADE20K data, '
        'Mask R-CNN and UperNet trained from scratch, evaluation, high-resolution inference '
        'and a report in WORK_DIR/report.md.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', default='work_dirs/demo', help='outputs and report')
    p.add_argument('--data-dir', default='data/demo', help='where synthetic data is written')
    p.add_argument('--det-iters', type=int, default=500,
                   help='Mask R-CNN training iterations (0: the demo config\'s full schedule)')
    p.add_argument('--seg-iters', type=int, default=800,
                   help='UperNet training iterations (0: the demo config\'s full schedule)')
    p.add_argument('--img-size', type=int, default=128, help='training image size')
    p.add_argument('--num-train', type=int, default=None, help='training images per task')
    p.add_argument('--num-val', type=int, default=None, help='validation images per task')
    p.add_argument('--arch', default=None, help='UFO-ViT arch for both models (see below)')
    p.add_argument('--scales', type=int, nargs='+', default=[4, 8],
                   help='high-resolution factors over the training size')
    p.add_argument('--seed', type=int, default=0, help='training data seed (validation: +1000)')
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads per step (default: all cores)')
    p.add_argument('--skip-det', action='store_true', help='no detection part')
    p.add_argument('--skip-seg', action='store_true', help='no segmentation part')
    p.add_argument('--quick', action='store_true', help='tiny smoke run (minutes)')
    return p.parse_args(argv)


def run_tool(args_list, log_path: Path, threads=None):
    """Run ``python <tool> ...`` from the repository root, showing its output
    and keeping a copy in ``log_path``; raise StepFailed on a non-zero exit."""
    env = dict(os.environ)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    cmd = [sys.executable] + [str(a) for a in args_list]
    print('$ ' + ' '.join(cmd[1:]), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    if rc != 0:
        raise StepFailed(f'{" ".join(cmd[1:3])} exited with {rc}; log: {log_path}')


def arch_override(arch: str):
    """(backbone arch value, embed_dims) for --arch."""
    from ufo_mm.models import resolve_arch
    value = json.loads(arch) if arch.strip().startswith('{') else arch
    return value, resolve_arch(value)['embed_dims']


def derived_config(base: Path, out: Path, body: str, max_iters: int = 0) -> Path:
    """A config inheriting ``base`` with ``body`` on top, kept in the work dir so
    the user sees exactly what ran. ``max_iters`` (0: the base's) sets the demo
    configs' one schedule knob, ``train_cfg.max_iters``: their decay, final
    evaluation and last checkpoint follow it."""
    if max_iters:
        body += f'\ntrain_cfg = dict(max_iters={max_iters})'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f'_base_ = {str(base)!r}\n{body}\ncustom_hooks = [dict(type=\'TimeEstimateHook\')]\n')
    return out


def model_override(args, heads, init_checkpoint=None) -> list:
    """The ``model = dict(...)`` line of a derived dense config: --arch (and the
    input channels of the parts named by ``heads(C)``), and a backbone
    ``init_cfg`` loading ``init_checkpoint``; none when neither is asked for."""
    backbone, rest = {}, ''
    if args.arch:
        arch, C = arch_override(args.arch)
        backbone['arch'], rest = arch, ', ' + heads(C)
    if init_checkpoint:  # _delete_: the demos' init_cfg is None, which takes no dict merge
        backbone['init_cfg'] = dict(_delete_=True, type='Pretrained',
                                    checkpoint=str(init_checkpoint))
    return [f'model = dict(backbone={backbone!r}{rest})'] if backbone else []


def det_config(args, data_root: Path, out: Path, init_checkpoint=None) -> Path:
    lines = [f"_data = {str(data_root) + '/'!r}",
             "train_dataloader = dict(dataset=dict(data_root=_data))",
             "val_dataloader = dict(dataset=dict(data_root=_data))",
             "test_dataloader = val_dataloader",
             "val_evaluator = dict(ann_file=_data + 'annotations/instances_val2017.json')",
             "test_evaluator = val_evaluator"]
    lines += model_override(args, lambda C: f'neck=dict(in_channels=[{C}] * 4)', init_checkpoint)
    return derived_config(DET_CONFIG, out, '\n'.join(lines), args.det_iters)


def seg_config(args, data_root: Path, out: Path, init_checkpoint=None) -> Path:
    lines = [f"_data = {str(data_root)!r}",
             "train_dataloader = dict(dataset=dict(data_root=_data))",
             "val_dataloader = dict(dataset=dict(data_root=_data))",
             "test_dataloader = val_dataloader"]
    lines += model_override(args, lambda C: f'decode_head=dict(in_channels=[{C}] * 4), '
                            f'auxiliary_head=dict(in_channels={C})', init_checkpoint)
    return derived_config(SEG_CONFIG, out, '\n'.join(lines), args.seg_iters)


def latest_checkpoint(work_dir: Path) -> Path:
    last = work_dir / 'last_checkpoint'
    if not last.is_file():
        raise StepFailed(f'training wrote no checkpoint in {work_dir}')
    return Path(last.read_text().strip())


def make_data(args, data_dir: Path):
    from ufo_mm.datasets import make_ade20k, make_coco
    n_train = args.num_train or (24 if args.quick else 400)
    n_val = args.num_val or (8 if args.quick else 100)
    coco = data_dir / 'coco'
    make_coco(coco, n_train, n_val, img_size=args.img_size, seed=args.seed)
    ade = make_ade20k(data_dir / 'ade20k', n_train, n_val, img_size=args.img_size,
                      seed=args.seed)
    print(f'synthetic COCO ({n_train} train / {n_val} val, {args.img_size} px) in {coco}\n'
          f'synthetic ADE20K ({n_train} / {n_val}) in {ade}', flush=True)
    return coco, Path(ade)


def train_and_test(name, config: Path, work: Path, threads, test_args=()):
    """tools/train.py then tools/test.py on the last checkpoint; returns
    (checkpoint, metrics read back from the test run's evaluation log)."""
    run_tool(['tools/train.py', config, '--work-dir', work], work / 'train.out', threads)
    ckpt = latest_checkpoint(work)
    test_dir = work / 'test'
    run_tool(['tools/test.py', config, ckpt, '--work-dir', test_dir, *test_args],
             work / 'test.out', threads)
    return ckpt, evaluation_metrics(test_dir)


def highres(config: Path, ckpt: Path, sizes, out_dir: Path, threads):
    run_tool(['tools/infer_highres.py', config, ckpt, '--sizes', *sizes, '--out-dir', out_dir],
             out_dir / 'infer.out', threads)
    return json.loads((out_dir / 'results.json').read_text())


def first_files(folder: Path, pattern: str, k: int):
    return sorted(folder.rglob(pattern))[:k]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.det_iters = min(args.det_iters or 20, 20)
        args.seg_iters = min(args.seg_iters or 20, 20)
        args.scales = args.scales if args.scales != [4, 8] else [2, 4]
    work = (ROOT / args.work_dir).resolve()
    data_dir = (ROOT / args.data_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sizes = [str(args.img_size * s) for s in args.scales]
    t_start = time.time()
    timings, sections, curves, metric_rows, highres_rows, pictures = {}, [], {}, [], [], []

    def step(name, fn, *a):
        print(f'\n===== {name} =====', flush=True)
        t = time.time()
        out = fn(*a)
        timings[name] = time.time() - t
        print(f'===== {name}: done in {timings[name] / 60:.1f} min =====', flush=True)
        return out

    try:
        coco, ade = step('synthetic data', make_data, args, data_dir)
        if not args.skip_det:
            cfg = det_config(args, coco, work / 'configs' / 'det_demo.py')
            ckpt, m = step('Mask R-CNN: train + evaluate', train_and_test, 'det', cfg,
                           work / 'det', args.threads, ['--show-dir', str(work / 'det' / 'pictures')])
            curves['Mask R-CNN'] = loss_curve(work / 'det')
            metric_rows.append(['UFO-ViT Mask R-CNN', 'bbox mAP', m['coco/bbox_mAP']])
            metric_rows.append(['UFO-ViT Mask R-CNN', 'segm mAP', m['coco/segm_mAP']])
            pictures += first_files(work / 'det' / 'pictures', '*.jpg', 3) or \
                first_files(work / 'det' / 'pictures', '*.png', 3)
            rows = step('Mask R-CNN: larger images', highres, cfg, ckpt, sizes,
                        work / 'highres' / 'det', args.threads)
            highres_rows += [['Mask R-CNN'] + _hr(r, (k,)) for r in rows
                             for k in ('bbox_mAP', 'segm_mAP')]
            pictures += [Path(r['picture']) for r in rows]
        if not args.skip_seg:
            cfg = seg_config(args, ade, work / 'configs' / 'seg_demo.py')
            ckpt, m = step('UperNet: train + evaluate', train_and_test, 'seg', cfg,
                           work / 'seg', args.threads)
            curves['UperNet'] = loss_curve(work / 'seg')
            metric_rows.append(['UFO-ViT UperNet', 'mIoU (%)', m['mIoU']])
            step('UperNet: prediction pictures', run_tool,
                 ['tools/seg_pictures.py', cfg, ckpt, '--num', '3',
                  '--out-dir', work / 'seg' / 'pictures'], work / 'seg' / 'pictures.out',
                 args.threads)
            pictures += first_files(work / 'seg' / 'pictures', '*.png', 3)
            rows = step('UperNet: larger images', highres, cfg, ckpt, sizes,
                        work / 'highres' / 'seg', args.threads)
            for r in rows:  # infer_highres gives a fraction, mmseg's IoUMetric percent
                r['mIoU (%)'] = round(100 * r.pop('mIoU'), 2)
            highres_rows += [['UperNet'] + _hr(r, ('mIoU (%)',)) for r in rows]
            pictures += [Path(r['picture']) for r in rows]
    except (StepFailed, KeyError, FileNotFoundError) as e:
        print(f'\ndemo FAILED: {e}', file=sys.stderr)
        return 1

    loss_png = plot_loss_curves(curves, work / 'loss_curves.png')
    total = time.time() - t_start
    sections = [
        ('Metrics on the held-out split (unseen seed)',
         markdown_table(['model', 'metric', 'value'], metric_rows)),
        (f'Same checkpoints on larger images (trained at {args.img_size} px)',
         markdown_table(['model', 'size', 'seconds', 'peak RSS (MiB)', 'metric', 'value'],
                        highres_rows)),
        ('Training loss', [loss_png]),
        ('Predictions', pictures),
        ('Time per step', markdown_table(['step', 'minutes'],
                                         [[k, round(v / 60, 2)] for k, v in timings.items()])
         + f'\n\nTotal: {total / 60:.1f} min. Logs, configs and checkpoints: `{work}`.'),
    ]
    report = write_report(work / 'report.md', 'UFO-ViT demo report', sections)
    print(f'\nreport: {report}\n' + markdown_table(['model', 'metric', 'value'], metric_rows))
    return 0


def _hr(row: dict, metric_keys):
    """One report row per metric of an infer_highres result."""
    metrics = [(k, row[k]) for k in metric_keys if k in row]
    k, v = metrics[0] if metrics else ('-', '-')
    return [f"{row['height']}x{row['width']}", row['seconds'], row['peak_rss_mb'], k, v]
