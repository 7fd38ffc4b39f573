"""Streamed whole-image Mask R-CNN against mmdet's sliced large-image inference, on composed scenes.

For each scene side: a scene composed from the config's validation images
(their objects at their own pixel size, ground truth included), detected by
``stream`` (StreamingMaskRCNN, test mode 'stream', the whole scene in one
pass), ``sliced`` (sahi's slice_image, inference_detector per patch, mmdet's
merge_results_by_nms: mmdet's demo/large_image_demo.py) and, optionally,
``whole`` (unstreamed mmdet at the scene size). Each case in its own process:
wall and CPU seconds, peak RSS, detections, bbox and segm mAP (pycocotools,
maxDets = --max-dets). Writes ``large_detection.{json,md}`` to ``--out-dir``
and prints the table; the logic is ``ufo_mm.benchmark.large_detection``.

Examples::

    python tools/benchmark_large_det.py configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py \\
        work_dirs/mask-rcnn_ufo-vit-demo_synthetic/iter_900.pth --sides 2048 4096
    python tools/benchmark_large_det.py CONFIG CKPT --methods stream whole --sides 4096 8192
    python tools/benchmark_large_det.py CONFIG CKPT --from-json a/large_detection.json \\
        b/large_detection.json --out-dir work_dirs/large_det
"""
import argparse
import json
import os.path as osp
import platform
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.benchmark import large_detection as bench  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    o = bench.OPTIONS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='mmdet Mask R-CNN config with a UFO-ViT backbone')
    parser.add_argument('checkpoint', help='its trained weights')
    parser.add_argument('--sides', nargs='+', type=int, default=[2048, 4096],
                        help='side of each square composed scene')
    parser.add_argument('--methods', nargs='+', default=['stream', 'sliced'],
                        choices=bench.METHODS)
    parser.add_argument('--threads', type=int, default=2, help='torch threads per case')
    parser.add_argument('--mem-limit-gb', type=float, default=22.,
                        help='a case past this resident set is stopped (out of memory)')
    parser.add_argument('--timeout', type=float, default=7200., help='seconds per case')
    parser.add_argument('--seed', type=int, default=o['seed'], help='scene composition')
    parser.add_argument('--fraction', type=float, default=o['fraction'],
                        help='fraction of the grid cells that get the objects of an image')
    parser.add_argument('--max-dets', type=int, default=o['max_dets'],
                        help='most detections per scene (rcnn.max_per_img of the streamed '
                             'detector) and COCOeval maxDets')
    parser.add_argument('--rpn-nms-pre', type=int, default=o['rpn_nms_pre'],
                        help='RPN candidates per level (default: the config\'s, scaled with '
                             'the area, at most 4 x --max-dets)')
    parser.add_argument('--rpn-max-per-img', type=int, default=o['rpn_max_per_img'],
                        help='RPN proposals (default: scaled as --rpn-nms-pre)')
    parser.add_argument('--patch-size', type=int, default=o['patch_size'], help='sliced')
    parser.add_argument('--overlap-ratio', type=float, default=o['overlap_ratio'],
                        help='sliced: overlap of neighbouring patches')
    parser.add_argument('--merge-iou-thr', type=float, default=o['merge_iou_thr'],
                        help='sliced: IoU of the NMS that merges the patches')
    parser.add_argument('--batch-size', type=int, default=o['batch_size'],
                        help='sliced: patches per inference_detector call')
    parser.add_argument('--band-rows', type=int, default=o['band_rows'], help='stream')
    parser.add_argument('--tokens-per-band', type=int, default=o['tokens_per_band'],
                        help='stream')
    parser.add_argument('--token-dtype', choices=('fp32', 'bf16', 'fp16'),
                        default=o['token_dtype'], help='stream: storage of the token tensors')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_large_det')
    parser.add_argument('--from-json', nargs='+', metavar='JSON',
                        help='measure nothing: tabulate the rows of earlier runs '
                             '(their large_detection.json files) together')
    args = parser.parse_args(argv)
    args.options = {k: getattr(args, k) for k in o}
    if not args.from_json:
        try:
            bench.check_options(args.methods, args.sides, args.threads, args.config,
                                args.checkpoint, **args.options)
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    from ufo_mm import cpu_features
    if args.from_json:
        rows = [row for path in args.from_json for row in json.load(open(path))]
        # what the rows say they ran with, not this command's defaults
        threads = ', '.join(sorted({str(r['threads']) for r in rows}))
        names = ', '.join(sorted({f"{osp.basename(r['config'])}, {osp.basename(r['checkpoint'])}"
                                  for r in rows}))
    else:
        threads = str(args.threads)
        names = f'{osp.basename(args.config)}, {osp.basename(args.checkpoint)}'
    title = (f'{platform.node() or "host"}: {cpu_features.bf16_status()}; fp32, '
             f'{threads} threads; {names}')
    print(title, flush=True)
    if not args.from_json:
        cases = bench.plan_cases(args.methods, args.sides, args.threads, args.config,
                                 args.checkpoint, **args.options)
        rows = bench.run_cases(cases, args.mem_limit_gb, args.timeout,
                               log=lambda line: print(line, flush=True))
    bench.write_outputs(rows, args.out_dir, title)
    print(bench.markdown(rows))
    print(f'wrote {args.out_dir}/large_detection.{{json,md}}')
    return 0 if any(r['status'] == 'ok' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
