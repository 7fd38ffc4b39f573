"""Time and peak memory of whole-image segmentation against image side:
streamed UFO-ViT (:mod:`ufo_mm.streaming`), the same model whole-image and in
mmseg's slide mode, Swin-T UperNet whole and slide.

Methods: ``stream``, ``whole`` and ``slide`` segment an image held in memory
into a label map held in memory. ``file`` and ``budget`` run what
``tools/infer_large.py`` runs on a TIFF
(:func:`ufo_mm.apis.file_segmentation.segment_raster`): a tiled TIFF read
band by band, the labels written band by band to a tiled TIFF; ``file`` keeps
the token tensors in RAM, ``budget`` gives the process a memory budget
(``max_ram_gb``), so that they go to disk when they do not fit it. The TIFF
(random pixels, uncompressed 512-px tiles) is written before the clock starts
into the case's ``image_dir``, once per side.

Each case runs in a fresh Python process of its own
(:mod:`ufo_mm.benchmark.harness`, which runs :func:`run_case` there), so its
peak resident set (``ru_maxrss``: everything the process held, imports and
weights included) belongs to that case alone. The parent watches each
child's resident set and stops it past ``mem_limit_gb`` (reported as 'out of
memory'), and skips a method's larger sides once it failed at a smaller one.
Random weights and a random image: time and memory do not depend on the
values.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional

from . import harness
from .harness import measure_call

#: name -> the segmentor's label and config (``streams=False``: no streamed case)
SEGMENTORS = {
    'upernet_ufo_s12': dict(
        label='UperNet UFO-ViT-S12/16',
        config='configs/ufo_vit/upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'),
    'fpn_ufo_s12': dict(
        label='Semantic FPN UFO-ViT-S12/16',
        config='configs/ufo_vit/sem_fpn/fpn_ufo-vit-s12-p16_8xb2-80k_ade20k-512x512.py'),
    'upernet_swin_t': dict(
        label='UperNet Swin-T', streams=False,  # streaming needs a UFO-ViT backbone
        config='mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_'
               'ade20k-512x512.py'),
}
METHODS = ('stream', 'file', 'budget', 'whole', 'slide')
#: the methods that read a TIFF and write one (infer_large's route)
FILE_METHODS = ('file', 'budget')
#: the methods that stream (they need a UFO-ViT backbone)
STREAMED = ('stream',) + FILE_METHODS
SLIDE = dict(crop_size=(512, 512), stride=(341, 341))
#: the case module the children run (its :func:`run_case`)
CASE_MODULE = 'ufo_mm.benchmark.large_image'


def build_segmentor(name: str):
    """The named segmentor (random weights, eval mode, BN for SyncBN; the
    project's configs build StreamingEncoderDecoder)."""
    from ufo_mm.builder import build_model
    cfg_path = SEGMENTORS[name]['config']
    if cfg_path.startswith('mmseg::'):  # a config shipped inside mmseg's wheel
        import mmseg
        cfg_path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs',
                            cfg_path[len('mmseg::'):])
    return build_model(cfg_path if osp.isabs(cfg_path) else osp.join(harness.ROOT, cfg_path))


def run_case(case: dict) -> dict:
    """Measure one case in this process; returns its row."""
    import numpy as np
    import torch
    from mmseg.structures import SegDataSample

    from ufo_mm.streaming import segment_large
    from ufo_mm.streaming.inputs import token_dtype

    torch.set_num_threads(case['threads'])
    model = build_segmentor(case['model'])
    side = case['side']
    if case['method'] in FILE_METHODS:
        return run_file_case(case, model)
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)

    def segment():
        with torch.no_grad():
            if case['method'] == 'stream':
                return segment_large(model, image,
                                     token_dtype=token_dtype(case.get('token_dtype')))
            from mmengine.config import ConfigDict
            model.test_cfg = ConfigDict(mode='whole') if case['method'] == 'whole' else \
                ConfigDict(mode='slide', **SLIDE)
            meta = dict(ori_shape=(side, side), img_shape=(side, side), pad_shape=(side, side))
            data = dict(inputs=[torch.from_numpy(image).permute(2, 0, 1)],
                        data_samples=[SegDataSample(metainfo=meta)])
            return model.test_step(data)[0].pred_sem_seg.data
    labels, measured = measure_call(segment)
    assert tuple(labels.shape[-2:]) == (side, side)
    return dict(case, status='ok', **measured)


def noise_tiff(path: str, side: int, tile: int = 512) -> str:
    """A ``side`` x ``side`` RGB tiled TIFF of random pixels at ``path``
    (BigTIFF, uncompressed), written tile by tile; kept when it exists."""
    import numpy as np
    import tifffile

    from ufo_mm.io.images import replaced_when_written
    if osp.exists(path):
        return path
    rng = np.random.default_rng(side)
    tiles = (rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8)
             for _ in range(((side + tile - 1) // tile) ** 2))
    with replaced_when_written(path) as part:
        tifffile.imwrite(part, tiles, shape=(side, side, 3), dtype=np.uint8,
                         tile=(tile, tile), photometric='rgb', bigtiff=True)
    return path


def run_file_case(case: dict, model) -> dict:
    """A ``file`` or ``budget`` case: the TIFF of its side segmented into a
    label TIFF by :func:`ufo_mm.apis.file_segmentation.segment_raster`,
    measured (the label file removed after)."""
    from ufo_mm.apis.file_segmentation import segment_raster
    from ufo_mm.io.rasters import open_raster
    from ufo_mm.streaming.inputs import token_dtype
    side = case['side']
    image = noise_tiff(osp.join(case['image_dir'], f'noise_{side}.tif'), side)
    labels = osp.join(case['image_dir'], f"labels_{side}_{case['method']}.tif")
    budget = case.get('max_ram_gb') if case['method'] == 'budget' else None
    try:
        with open_raster(image) as raster:
            info, measured = measure_call(lambda: segment_raster(
                model, raster, labels, max_ram_gb=budget, scratch_dir=case['image_dir'],
                token_dtype=token_dtype(case.get('token_dtype'))))
    finally:
        if osp.exists(labels):
            os.remove(labels)
    return dict(case, status='ok', token_place=info['token_place'], token_gb=info['token_gb'],
                band_rows=info['band_rows'], **measured)


def plan_cases(models: List[str], methods: List[str], sides: List[int], threads: int,
               max_ram_gb: float = 4., image_dir: Optional[str] = None,
               token_dtype: Optional[str] = None) -> List[dict]:
    """The cases in order: per model, per method, the sides from small to
    large; no streamed method for a model that cannot be streamed (Swin-T).
    ``file`` and ``budget`` cases get ``image_dir`` (their TIFFs' folder),
    ``budget`` cases ``max_ram_gb``, streamed cases ``token_dtype`` where
    one is given (e.g. 'bf16': in-RAM tokens at 32768 px fit 24 GiB)."""
    cases = []
    for m in models:
        for meth in methods:
            if meth in STREAMED and not SEGMENTORS[m].get('streams', True):
                continue
            for s in sorted(sides):
                case = dict(model=m, method=meth, side=s, threads=threads)
                if meth in FILE_METHODS:
                    case['image_dir'] = image_dir
                if meth == 'budget':
                    case['max_ram_gb'] = max_ram_gb
                if meth in STREAMED and token_dtype is not None:
                    case['token_dtype'] = token_dtype
                cases.append(case)
    return cases


def run_cases(cases: List[dict], mem_limit_gb: float, timeout_s: float,
              log=print) -> List[dict]:
    """Each case in its own watched process, in order
    (:func:`ufo_mm.benchmark.harness.run_cases`); a (model, method)'s larger
    sides are skipped once it failed."""
    return harness.run_cases(CASE_MODULE, cases, mem_limit_gb, timeout_s,
                             series=lambda c: (c['model'], c['method']), log=log)


def add_per_pixel_ratios(rows: List[dict], reference_side: Optional[int] = None) -> None:
    """``s_per_mpx`` of each row, and ``per_px_vs_whole``: its time per pixel
    over the same model's whole-image time per pixel at ``reference_side``
    (default: the largest side whole-image ran at). A ``budget`` row also gets
    ``per_px_vs_file`` (and ``file_side``): its time per pixel over the same
    model's ``file`` run (tokens in RAM) at the same side, else at the largest
    side ``file`` ran at: what spilling the tokens costs."""
    ok = [r for r in rows if r['status'] == 'ok']
    for r in ok:
        r['s_per_mpx'] = round(r['seconds'] / (r['side'] ** 2 / 1e6), 3)
        if 'cpu_seconds' in r:
            r['cpu_s_per_mpx'] = round(r['cpu_seconds'] / (r['side'] ** 2 / 1e6), 3)
    for r in ok:
        whole = [w for w in ok if w['model'] == r['model'] and w['method'] == 'whole' and
                 (reference_side is None or w['side'] == reference_side)]
        if whole:
            ref = max(whole, key=lambda w: w['side'])
            r['per_px_vs_whole'] = round(r['s_per_mpx'] / ref['s_per_mpx'], 3)
            r['whole_side'] = ref['side']
            if 'cpu_s_per_mpx' in r and 'cpu_s_per_mpx' in ref:
                r['cpu_per_px_vs_whole'] = round(r['cpu_s_per_mpx'] / ref['cpu_s_per_mpx'], 3)
        in_ram = [f for f in ok if f['model'] == r['model'] and f['method'] == 'file'] \
            if r['method'] == 'budget' else []
        if in_ram:
            same = [f for f in in_ram if f['side'] == r['side']]
            ref = same[0] if same else max(in_ram, key=lambda f: f['side'])
            r['per_px_vs_file'] = round(r['s_per_mpx'] / ref['s_per_mpx'], 3)
            r['file_side'] = ref['side']


def markdown(rows: List[dict]) -> str:
    lines = ['| model | method | side | seconds | CPU seconds | s / Mpx | peak RSS (GiB) | '
             'per pixel vs whole (wall; CPU) | budget: tokens; per pixel vs file |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        label = SEGMENTORS[r['model']]['label']
        if r['status'] != 'ok':
            lines.append(f"| {label} | {r['method']} | {r['side']} | {r['status']} | | | "
                         f"{r.get('peak_rss_gb', '')} | | |")
            continue
        vs = f"{r['per_px_vs_whole']:.2f}" if 'per_px_vs_whole' in r else ''
        if 'cpu_per_px_vs_whole' in r:
            vs += f"; {r['cpu_per_px_vs_whole']:.2f}"
        if vs:
            vs += f" (whole at {r['whole_side']})"
        spill = ''
        if r['method'] == 'budget':
            spill = f"{r.get('max_ram_gb')} GiB: {r.get('token_place')}"
            if 'per_px_vs_file' in r:
                spill += f"; {r['per_px_vs_file']:.2f} (file at {r['file_side']})"
        lines.append(f"| {label} | {r['method']} | {r['side']} | {r['seconds']:.1f} | "
                     f"{r.get('cpu_seconds', '')} | {r['s_per_mpx']:.2f} | "
                     f"{r['peak_rss_gb']:.2f} | {vs} | {spill} |")
    return '\n'.join(lines)


def plot(rows: List[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series: Dict[tuple, list] = {}
    for r in rows:
        if r['status'] == 'ok':
            series.setdefault((r['model'], r['method']), []).append(r)
    for (model, method), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r['side'])
        label = f"{SEGMENTORS[model]['label']}, {method}"
        if method == 'budget':
            label += f" ({rs[0].get('max_ram_gb')} GiB)"
        style = {'stream': '-o', 'file': '-.d', 'budget': '-v', 'whole': '--s'}.get(method, ':^')
        axes[0].plot([r['side'] for r in rs], [r['peak_rss_gb'] for r in rs], style, label=label)
        axes[1].plot([r['side'] for r in rs], [r['seconds'] for r in rs], style, label=label)
        if method == 'budget':  # the budget itself, a peak above it would show
            axes[0].axhline(rs[0]['max_ram_gb'], color=axes[0].lines[-1].get_color(),
                            linestyle=':', linewidth=1)
    failed_at: Dict[int, int] = {}  # side -> failures labelled there so far (stacked)
    for r in rows:  # a failed case: an x at the memory it had reached
        if r['status'] not in ('ok',) and not r['status'].startswith('skipped') and \
                r.get('peak_rss_gb'):
            k = failed_at[r['side']] = failed_at.get(r['side'], -1) + 1
            axes[0].plot([r['side']], [r['peak_rss_gb']], 'kx', markersize=9)
            axes[0].annotate(f"{SEGMENTORS[r['model']]['label']}, {r['method']}: {r['status'][:24]}",
                             (r['side'], r['peak_rss_gb']), fontsize=6, ha='right',
                             xytext=(-6, -10 - 8 * k), textcoords='offset points')
    from matplotlib.ticker import ScalarFormatter
    for ax, ylabel in zip(axes, ('peak RSS (GiB)', 'seconds')):
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel('image side (pixels)')
        ax.set_ylabel(ylabel)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].yaxis.set_minor_formatter(ScalarFormatter())  # GiB: often less than a decade
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: List[dict], out_dir: str, title: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    add_per_pixel_ratios(rows)
    with open(osp.join(out_dir, 'large_image.json'), 'w') as f:
        json.dump(rows, f, indent=1)
    with open(osp.join(out_dir, 'large_image.md'), 'w') as f:
        f.write(f'{title}\n\n{markdown(rows)}\n')
    plot(rows, osp.join(out_dir, 'large_image.png'), title)
