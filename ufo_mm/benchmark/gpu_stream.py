"""Whole-image segmentation on one GPU, whole against streamed, up to a gigapixel.

For UperNet and Semantic FPN with UFO-ViT-S12/16 (the shipped ADE20K configs,
150 classes, random weights with random BatchNorm statistics), on square
random images of each side:

- ``whole``: mmseg's whole mode as a user runs it on a GPU: the uint8 image
  uploaded, normalised there, ``EncoderDecoder.inference`` (full-size
  logits), argmax, labels back to the host;
- ``stream``: :func:`ufo_mm.streaming.segment_large` on the same image (the
  bands computed on the GPU, the token tensors on the GPU where they fit,
  labels back band by band).

Each case is timed with CUDA events around the call (after a warm-up run of
each model at the smallest side), with its peak device memory
(``torch.cuda.max_memory_allocated``) and the process's peak resident set so
far (host; the cases run smallest first). Where both methods ran, ``agree``
is the fraction of pixels whose labels are equal (1.0: exact). A case that
runs out of device memory is recorded as ``oom``; a larger side of the same
method is then not tried. Cases whose time, extrapolated linearly in pixels
from the same method's last one, would overrun ``time_budget_s`` are
``skipped``.

Precisions: ``fp32`` (TF32 off: exact float32), ``tf32`` (TF32 matmuls and
convolutions) and ``bf16`` (``torch.autocast('cuda', bfloat16)``).
"""
import csv
import gc
import json
import math
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ufo_mm.analysis.process_stats import peak_rss_bytes

from .harness import ROOT
CONFIGS = {
    'upernet_s12': ('UperNet UFO-S12/16',
                    'configs/ufo_vit/upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'),
    'semfpn_s12': ('Semantic FPN UFO-S12/16',
                   'configs/ufo_vit/sem_fpn/fpn_ufo-vit-s12-p16_8xb2-80k_ade20k-512x512.py'),
}
FIELDS = ['model', 'label', 'method', 'precision', 'side', 'megapixels', 'token_dtype',
          'token_place', 'seconds', 'mpx_per_s', 'peak_device_gb', 'peak_rss_gb', 'agree',
          'status', 'gpu', 'torch']


def build_segmentor(name: str, device: torch.device):
    """The config's segmentor (SyncBN as BN), random weights, random BatchNorm
    statistics, eval mode, on ``device``."""
    from mmengine.config import Config

    from ufo_mm.builder import build_model
    cfg = Config.fromfile(str(ROOT / CONFIGS[name][1]))
    cfg.model.pretrained = None
    cfg.model.backbone.pop('init_cfg', None)
    torch.manual_seed(0)
    model = build_model(cfg, device=str(device))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def random_image(side: int, seed: int = 0, tile: int = 1024) -> np.ndarray:
    """A (side, side, 3) uint8 BGR image: a random tile repeated (fast to make
    at a gigapixel), smoothed so that labels form regions."""
    import cv2
    rng = np.random.default_rng(seed)
    t = min(tile, side)
    block = cv2.GaussianBlur(rng.integers(0, 256, (t, t, 3), dtype=np.uint8), (9, 9), 3)
    reps = -(-side // t)
    out = np.empty((side, side, 3), dtype=np.uint8)
    for i in range(reps):
        rows = out[i * t:min((i + 1) * t, side)]
        for j in range(reps):
            cols = rows[:, j * t:min((j + 1) * t, side)]
            cols[...] = block[:cols.shape[0], :cols.shape[1]]
    return out


def whole_labels(model, image: np.ndarray) -> np.ndarray:
    """mmseg's whole mode on the GPU: upload, normalise, inference, argmax, labels back."""
    from ufo_mm.streaming.inputs import array_source
    device = next(model.parameters()).device
    node, padded = array_source(image, model.data_preprocessor, device)
    inputs = node.compute(0, padded[0])
    H, W = image.shape[:2]
    meta = dict(img_shape=padded, pad_shape=padded, ori_shape=(H, W),
                padding_size=[0, padded[1] - W, 0, padded[0] - H])
    logits = model.inference(inputs, [meta])
    del inputs
    labels = logits[0].argmax(0)[:H, :W].to(torch.uint8)
    del logits
    return labels.cpu().numpy()


def precision_context(precision: str):
    """(TF32 on?, autocast context) of a precision name."""
    from contextlib import nullcontext
    if precision not in ('fp32', 'tf32', 'bf16'):
        raise ValueError(f'precision must be fp32, tf32 or bf16, got {precision!r}')
    tf32 = precision != 'fp32'
    ctx = torch.autocast('cuda', dtype=torch.bfloat16) if precision == 'bf16' else nullcontext()
    return tf32, ctx


def timed(fn, device):
    """(result, seconds) of ``fn()`` by CUDA events, synchronised at both ends."""
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn()
    end.record()
    torch.cuda.synchronize(device)
    return out, start.elapsed_time(end) / 1000


def segment_timed(model, image, method: str, precision: str, token_dtype: Optional[str],
                  token_device: str, device) -> dict:
    """One segmentation of ``image`` by ``method`` ('whole' or 'stream') at
    ``precision``: dict of the labels, seconds (CUDA events), token_place and
    peak_device_gb."""
    from ufo_mm.streaming import segment_large
    from ufo_mm.streaming.inputs import token_dtype as dtype_of
    tf32, ctx = precision_context(precision)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    info = {}
    with torch.no_grad(), ctx:
        if method == 'whole':
            labels, seconds = timed(lambda: whole_labels(model, image), device)
        else:
            labels, seconds = timed(lambda: segment_large(
                model, image, token_dtype=dtype_of(token_dtype), token_device=token_device,
                info=info), device)
    return dict(labels=labels, seconds=seconds, token_place=info.get('token_place'),
                peak_device_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 2))


def run(models: List[str], sides: List[int], methods: List[str], precisions: List[str],
        device='cuda', token_dtype: Optional[str] = None, token_device: str = 'auto',
        whole_max_side: int = 8192, time_budget_s: float = 300., log=print) -> List[dict]:
    """Every (model, precision, side, method) case, smallest side first; rows as FIELDS."""
    device = torch.device(device)
    gpu, rows = torch.cuda.get_device_name(device), []
    t_start = time.perf_counter()
    for name in models:
        model = build_segmentor(name, device)
        warm = random_image(min(sides))
        for precision in precisions:  # warm-up: kernels, cuDNN, allocator
            for method in methods:
                segment_timed(model, warm, method, precision, token_dtype, token_device,
                              device)
        for precision in precisions:
            last = {}  # method -> (pixels, seconds) of its last case that ran
            failed = set()
            for side in sorted(sides):
                image = random_image(side)
                labels = {}
                for method in methods:
                    row = dict(model=name, label=CONFIGS[name][0], method=method,
                               precision=precision, side=side,
                               megapixels=round(side * side / 1e6, 1),
                               token_dtype=token_dtype or 'fp32' if method == 'stream' else '',
                               gpu=gpu, torch=torch.__version__)
                    left = time_budget_s - (time.perf_counter() - t_start)
                    guess = None
                    if method in last:
                        px, s = last[method]
                        guess = s * side * side / px
                    if method in failed or (method == 'whole' and side > whole_max_side):
                        row['status'] = 'skipped (larger than what ran)'
                    elif guess is not None and guess > left:
                        row['status'] = f'skipped (about {guess:.0f} s, {left:.0f} s left)'
                    else:
                        try:
                            out = segment_timed(model, image, method, precision,
                                                token_dtype, token_device, device)
                            labels[method] = out.pop('labels')
                            row.update(out, status='ok', seconds=round(out['seconds'], 3),
                                       mpx_per_s=round(side * side / 1e6 / out['seconds'], 2))
                            last[method] = (side * side, out['seconds'])
                        except torch.cuda.OutOfMemoryError:
                            row['status'] = 'oom'
                            failed.add(method)
                        gc.collect()
                        torch.cuda.empty_cache()
                    row['peak_rss_gb'] = round(peak_rss_bytes() / 2**30, 2)
                    rows.append(row)
                    log(json.dumps({k: row.get(k) for k in FIELDS if k not in ('gpu', 'torch')}))
                if len(labels) == 2:
                    agree = float((labels['whole'] == labels['stream']).mean())
                    for row in rows[-2:]:
                        row['agree'] = round(agree, 6)
                    log(f'  {name} {precision} {side}: streamed and whole labels agree on '
                        f'{100 * agree:.4f} % of the pixels')
                del image, labels
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def write(rows: List[dict], out_dir) -> dict:
    """gpu_stream.csv, gpu_stream.md (time, memory, streamed/whole ratios) and
    gpu_stream.png (time and peak device memory against side)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'gpu_stream.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, FIELDS, extrasaction='ignore')
        w.writeheader()
        w.writerows(rows)
    lines = [f'GPU: {rows[0]["gpu"]}, torch {rows[0]["torch"]}' if rows else 'no rows', '',
             '| model | precision | side | method | token store | s | Mpx/s | peak GPU GiB | '
             'peak RSS GiB | stream/whole time | labels equal | status |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    by = {(r['model'], r['precision'], r['side'], r['method']): r for r in rows}
    for r in rows:
        other = by.get((r['model'], r['precision'], r['side'], 'whole'))
        ratio = ''
        if r['method'] == 'stream' and other and other.get('seconds') and r.get('seconds'):
            ratio = f'{r["seconds"] / other["seconds"]:.2f}'
        store = f'{r.get("token_place") or ""} {r.get("token_dtype") or ""}'.strip()
        agree = '' if r.get('agree') is None else f'{100 * r["agree"]:.3f} %'
        lines.append(f'| {r["label"]} | {r["precision"]} | {r["side"]} | {r["method"]} | '
                     f'{store} | {r.get("seconds", "")} | {r.get("mpx_per_s", "")} | '
                     f'{r.get("peak_device_gb", "")} | {r.get("peak_rss_gb", "")} | {ratio} | '
                     f'{agree} | {r["status"]} |')
    (out / 'gpu_stream.md').write_text('\n'.join(lines) + '\n')
    try:
        plot(rows, out / 'gpu_stream.png')
    except Exception as e:  # a plot is no reason to lose the measurements
        print(f'gpu_stream: no plot ({type(e).__name__}: {e})')
    return dict(csv=str(out / 'gpu_stream.csv'), md=str(out / 'gpu_stream.md'))


def plot(rows: List[dict], path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = sorted({(r['label'], r['method'], r['precision']) for r in rows})
    for key in keys:
        pts = [r for r in rows if (r['label'], r['method'], r['precision']) == key
               and r['status'] == 'ok']
        if not pts:
            continue
        sides = [r['side'] for r in pts]
        style = '-o' if key[1] == 'stream' else '--s'
        name = f'{key[0]} {key[1]} {key[2]}'
        axes[0].plot(sides, [r['seconds'] for r in pts], style, label=name)
        axes[1].plot(sides, [r['peak_device_gb'] for r in pts], style, label=name)
    for ax, what in zip(axes, ('seconds', 'peak GPU memory, GiB')):
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xlabel('image side, pixels')
        ax.set_ylabel(what)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].legend(fontsize=7)
    gpu = rows[0]['gpu'] if rows else ''
    fig.suptitle(f'Whole-image segmentation on one GPU ({gpu}): whole vs streamed')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def projected_seconds(rows: List[dict], side: int) -> Optional[float]:
    """Streamed time at ``side`` extrapolated linearly in pixels from the
    largest streamed case that ran."""
    ok = [r for r in rows if r['method'] == 'stream' and r['status'] == 'ok']
    if not ok:
        return None
    r = max(ok, key=lambda r: r['side'])
    return r['seconds'] * (side / r['side']) ** 2 if math.isfinite(r['seconds']) else None
