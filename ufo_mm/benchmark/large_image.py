"""Time and peak memory of whole-image segmentation against image side:
streamed UFO-ViT (:mod:`ufo_mm.streaming`), the same model whole-image and in
mmseg's slide mode, Swin-T UperNet whole and slide.

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
METHODS = ('stream', 'whole', 'slide')
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

    torch.set_num_threads(case['threads'])
    model = build_segmentor(case['model'])
    side = case['side']
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)

    def segment():
        with torch.no_grad():
            if case['method'] == 'stream':
                return segment_large(model, image)
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


def plan_cases(models: List[str], methods: List[str], sides: List[int],
               threads: int) -> List[dict]:
    """The cases in order: per model, per method, the sides from small to
    large; no 'stream' for a model that cannot be streamed (Swin-T)."""
    return [dict(model=m, method=meth, side=s, threads=threads)
            for m in models for meth in methods for s in sorted(sides)
            if meth != 'stream' or SEGMENTORS[m].get('streams', True)]


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
    (default: the largest side whole-image ran at)."""
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


def markdown(rows: List[dict]) -> str:
    lines = ['| model | method | side | seconds | CPU seconds | s / Mpx | peak RSS (GiB) | '
             'per pixel vs whole (wall; CPU) |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        label = SEGMENTORS[r['model']]['label']
        if r['status'] != 'ok':
            lines.append(f"| {label} | {r['method']} | {r['side']} | {r['status']} | | | "
                         f"{r.get('peak_rss_gb', '')} | |")
            continue
        vs = f"{r['per_px_vs_whole']:.2f}" if 'per_px_vs_whole' in r else ''
        if 'cpu_per_px_vs_whole' in r:
            vs += f"; {r['cpu_per_px_vs_whole']:.2f}"
        if vs:
            vs += f" (whole at {r['whole_side']})"
        lines.append(f"| {label} | {r['method']} | {r['side']} | {r['seconds']:.1f} | "
                     f"{r.get('cpu_seconds', '')} | {r['s_per_mpx']:.2f} | "
                     f"{r['peak_rss_gb']:.2f} | {vs} |")
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
        style = '-o' if method == 'stream' else ('--s' if method == 'whole' else ':^')
        axes[0].plot([r['side'] for r in rs], [r['peak_rss_gb'] for r in rs], style, label=label)
        axes[1].plot([r['side'] for r in rs], [r['seconds'] for r in rs], style, label=label)
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
