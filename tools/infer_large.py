"""Segment or detect one image of any size, up to a gigapixel, whole, with a UFO-ViT model.

The image is not tiled and not resized: the model runs on all of it, streamed
band by band through the backbone, the pyramid and the head, so memory stays
far below what whole-image inference needs, and every pixel gets the label
(every object the detection) that whole-image inference would give it.

With an mmseg segmentor config, writes in ``--out-dir``:
  * ``<image stem>_labels.tif`` (TIFF input) or ``<image stem>_labels.png``
    (PNG, JPEG and the rest; ``--labels-format`` chooses): the class index of
    every pixel, the image's full height and width, 8-bit grayscale (16-bit
    when the model has more than 255 classes). The TIFF is tiled and
    deflate-compressed, written band by band as the labels are made, with
    the input's georeference (CRS, transform) copied; BigTIFF past 4 GB;
    ``--cog`` makes it a Cloud Optimized GeoTIFF;
  * ``<image stem>_overlay.jpg``: the image with the labels blended over it in
    the dataset palette, shrunk to ``--overlay-side`` pixels on its long side,
    made from a label map kept at that size.

A TIFF (tiled or striped, BigTIFF, GeoTIFF, a pyramid's ``--level``) is read
band by band as the model needs the rows, never whole; PNG and JPEG are
decoded whole. ``--max-ram-gb`` bounds the memory: the backbone's token
tensors go to files in ``--scratch-dir`` when they do not fit it (the same
labels), and a budget too small for one band stops with the minimum named.

With an mmdet ``StreamingMaskRCNN`` config (``ufo_mm.streaming.detector``):
  * ``<image stem>_instances.json``: every detection as in a COCO results
    file (bbox [x, y, w, h], score, category_id, category, segmentation as
    RLE), with the image's height, width and the class names;
  * ``<image stem>_overlay.jpg``: the image with masks and boxes drawn, shrunk.
  ``--max-dets`` raises the detections kept (``test_cfg.rcnn.max_per_img``) for
  scenes with many objects.

Progress goes to stderr; the last line on stdout is one JSON object: height,
width, seconds (the model), peak_rss_gb (the process's peak resident memory,
GiB), peak_device_gb (on a GPU: ``torch.cuda.max_memory_allocated``, GiB;
null on the CPU), token_place (where the token tensors lived: 'compute',
'host' or 'disk'), image_read_seconds, write_seconds, band_rows (those used), the outputs'
paths, and num_classes and labels_dtype (segmentation) or num_instances
(detection). Reads PNG, JPEG and (Big)TIFF beyond PIL's and OpenCV's pixel
limits (``ufo_mm.io.rasters``); detection holds the image whole.

On a GPU (``--device cuda:0``) every band is computed there; the token
tensors stay on the GPU when they fit in its free memory, else they live in
pinned host memory (``--token-device`` overrides the choice), and the labels
come back band by band.

Example::

    python tools/infer_large.py configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py \\
        work_dirs/upernet_ufo-vit-demo_synthetic/iter_2000.pth scene.tif --out-dir work_dirs/large
"""
import argparse
import json
import os.path as osp
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from ufo_mm.analysis.process_stats import peak_rss_bytes  # noqa: E402
from ufo_mm.apis.progress import ProgressBarCallback  # noqa: E402
from ufo_mm.io.detections import write_instances  # noqa: E402
from ufo_mm.io.images import ImageReadError  # noqa: E402
from ufo_mm.visualization.overlays import default_palette, write_detection_overlay  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='mmseg config of a UFO-ViT segmentor, or mmdet config '
                        'of a StreamingMaskRCNN')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='PNG, JPEG or (Big)TIFF image, any size')
    parser.add_argument('--out-dir', default='work_dirs/infer_large',
                        help='the label map and the overlay go here')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--token-device', default='auto',
                        help="where the backbone's token tensors live: auto (on the GPU where "
                        'they fit in its free memory, else pinned host memory; on disk past '
                        '--max-ram-gb), cuda, cpu, or disk (files in --scratch-dir)')
    parser.add_argument('--max-ram-gb', type=float, default=None,
                        help='memory budget of the whole process, GiB: the token tensors go '
                        'to disk when they do not fit it; None: no budget')
    parser.add_argument('--scratch-dir', default=None,
                        help='where token tensors spilled to disk go (a temporary folder '
                        'made there, removed at the end); None: beside the outputs')
    parser.add_argument('--level', type=int, default=None,
                        help='pyramid level of a pyramidal TIFF (whole-slide SVS, OME, GeoTIFF '
                        'overviews) to segment; None: level 0, the full resolution')
    parser.add_argument('--labels-format', choices=('png', 'tif'), default=None,
                        help='label file: tif (tiled, compressed, written band by band, '
                        'georeference copied) or png (gathered whole); None: tif for a TIFF '
                        'input, png for the rest')
    parser.add_argument('--cog', action='store_true',
                        help='write the label TIFF as a Cloud Optimized GeoTIFF (rasterio)')
    parser.add_argument('--band-rows', type=int, default=None,
                        help='image rows per streamed band, None: the streaming default; '
                        'fewer rows, less memory, the same labels')
    parser.add_argument('--token-dtype', choices=('fp32', 'bf16', 'fp16'), default='fp32',
                        help='storage of the backbone\'s token tensors: bf16/fp16 halve the '
                        'largest part of the memory; the labels are then close to, not equal '
                        'to, whole-image inference\'s')
    parser.add_argument('--overlay-side', type=int, default=2048,
                        help='long side of the overlay picture, pixels')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='weight of the label colours in the overlay')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads, None: torch\'s own choice')
    parser.add_argument('--max-dets', type=int, default=None,
                        help='detection: detections kept per image (test_cfg.rcnn.max_per_img), '
                        'None: the config\'s')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    args = parser.parse_args(argv)
    for name in ('band_rows', 'overlay_side', 'threads', 'max_dets'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.max_ram_gb is not None and args.max_ram_gb <= 0:
        parser.error(f'--max-ram-gb must be > 0, got {args.max_ram_gb}')
    if args.level is not None and args.level < 0:
        parser.error(f'--level must be >= 0, got {args.level}')
    if args.cog and args.labels_format == 'png':
        parser.error('--cog needs --labels-format tif')
    if not 0 <= args.opacity <= 1:
        parser.error(f'--opacity must be in [0, 1], got {args.opacity}')
    return args


def log(message: str):
    print(f'infer_large: {message}', file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from ufo_mm.builder import build_model, library_of
    from ufo_mm.devices import DeviceError, peak_device_gb, reset_peak, resolve_device
    from ufo_mm.io.rasters import open_raster
    try:
        device = resolve_device(args.device)
        if args.token_device not in ('auto', 'cpu', 'disk'):
            resolve_device(args.token_device)
    except DeviceError as e:
        raise SystemExit(f'infer_large: {e}')
    args.device = str(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.image)
    t = time.perf_counter()
    try:  # a TIFF: its header now, its rows band by band later; PNG, JPEG: decoded now
        raster = open_raster(path, args.level)
    except (FileNotFoundError, ImageReadError) as e:
        raise SystemExit(f'infer_large: {e}')
    read_seconds = time.perf_counter() - t
    height, width = raster.height, raster.width
    log(f'{path}: {width} x {height}' + (f' (level {raster.level})' if raster.level else '') +
        (f' decoded in {read_seconds:.1f} s' if raster.decoded_whole else
         ', read band by band'))

    with raster:
        model = build_model(args.config, args.checkpoint, device=args.device,
                            cfg_options=args.cfg_options)
        reset_peak(device)
        library = library_of(model.cfg)
        if library not in ('mmseg', 'mmdet'):
            raise SystemExit(f'infer_large: {args.config} is neither an mmseg nor an mmdet '
                             'config')
        row = dict(image=str(path), height=int(height), width=int(width), level=raster.level)
        if library == 'mmseg':
            row.update(segment(args, model, raster, path))
        else:
            t = time.perf_counter()
            image = raster.read_whole('bgr')  # detection holds the image whole
            read_seconds += time.perf_counter() - t
            row.update(detect(args, model, image, path))
    row.update(peak_rss_gb=round(peak_rss_bytes() / 2**30, 3),
               peak_device_gb=peak_device_gb(device),
               image_read_seconds=round(read_seconds, 3),
               band_rows=row.get('band_rows', args.band_rows),
               token_dtype=args.token_dtype, max_ram_gb=args.max_ram_gb, device=args.device,
               threads=torch.get_num_threads())
    print(json.dumps(row), flush=True)
    return row


def segment(args, model, raster, path: Path) -> dict:
    from ufo_mm.apis.file_segmentation import (LABEL_FORMATS, default_labels_format,
                                               segment_raster)
    from ufo_mm.io.rasters import RasterError, RasterWriteError
    from ufo_mm.streaming.inputs import token_dtype
    from ufo_mm.streaming.tokens import MemoryBudgetError, ScratchDiskFull
    fmt = args.labels_format or default_labels_format(raster)
    out_dir = Path(args.out_dir)
    labels_path = out_dir / f'{path.stem}_labels{LABEL_FORMATS[fmt]}'
    try:
        row = segment_raster(
            model, raster, labels_path, out_dir / f'{path.stem}_overlay.jpg',
            overlay_side=args.overlay_side, opacity=args.opacity, band_rows=args.band_rows,
            token_dtype=token_dtype(args.token_dtype), token_device=args.token_device,
            max_ram_gb=args.max_ram_gb, scratch_dir=args.scratch_dir or out_dir, cog=args.cog,
            progress=ProgressBarCallback(sys.stderr))
    except (MemoryBudgetError, ScratchDiskFull, RasterError, RasterWriteError) as e:
        raise SystemExit(f'infer_large: {e}')
    log(f'segmented in {row["seconds"]:.1f} s (token tensors: {row["token_place"]}); '
        f'wrote {row["labels"]} and {row["overlay"]}')
    row['labels_format'] = fmt
    return row


def detect(args, model, image, path: Path) -> dict:
    from ufo_mm.streaming.detector import StreamingMaskRCNN, detect_large
    from ufo_mm.streaming.inputs import token_dtype
    if not isinstance(model, StreamingMaskRCNN):
        raise SystemExit(f'infer_large: {args.config} builds a {type(model).__name__}; '
                         "streamed detection needs model.type='StreamingMaskRCNN'")
    if args.max_dets:
        model.roi_head.test_cfg.max_per_img = args.max_dets
    t = time.perf_counter()
    instances = detect_large(model, image, band_rows=args.band_rows,
                             progress=ProgressBarCallback(sys.stderr),
                             token_dtype=token_dtype(args.token_dtype),
                             token_device=args.token_device)
    seconds = time.perf_counter() - t
    log(f'{len(instances)} detections in {seconds:.1f} s')

    t = time.perf_counter()
    out_dir = Path(args.out_dir)
    classes = (model.dataset_meta or {}).get('classes')
    json_path = write_instances(out_dir / f'{path.stem}_instances.json', instances,
                                *image.shape[:2], classes=classes)
    palette = (model.dataset_meta or {}).get('palette')
    if palette is None:
        palette = default_palette(model.roi_head.bbox_head.num_classes)
    overlay_path = write_detection_overlay(out_dir / f'{path.stem}_overlay.jpg',
                                           image[..., ::-1], instances, palette,
                                           max_side=args.overlay_side, opacity=args.opacity)
    write_seconds = time.perf_counter() - t
    log(f'wrote {json_path} and {overlay_path}')
    return dict(seconds=round(seconds, 3), write_seconds=round(write_seconds, 3),
                num_instances=len(instances), instances=str(json_path),
                overlay=str(overlay_path))


def stop_on_signal(signum, frame):
    """SIGTERM (a scheduler's time limit, ``kill``) unwinds like Ctrl-C: the
    partial label file and the spilled token files are removed."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        main()
    except KeyboardInterrupt as e:
        print(f'infer_large: stopped ({e or "SIGINT"}); no partial output was left behind',
              file=sys.stderr)
        sys.exit(130)
