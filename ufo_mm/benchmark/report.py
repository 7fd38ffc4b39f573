"""The benchmark's results: ratios to UFO-ViT-S12/16, the printed tables, the
headline summary, the CSV, the markdown tables and the plot. A row is an
inference (``mode='infer'``) or a training step (``'train'``), of the model or
of ``torch.compile(model)`` (``compiled``, its first call in ``compile_s``)."""
import csv
import math
import os.path as osp

from .zoo import MODELS, PEERS, REFERENCE

CSV_COLUMNS = ['model', 'label', 'kind', 'mode', 'precision', 'compiled', 'with_cp', 'height',
               'width', 'batch', 'megapixels', 'threads', 'status', 'time_ms_median',
               'time_ms_min', 'repeats', 'timing', 'time_ms_alone', 'compile_s', 'peak_rss_mb',
               'base_rss_mb', 'fwd_mem_mb', 'gflops', 'other_cpu', 'time_ratio_vs_ufo_s12',
               'mem_ratio_vs_ufo_s12', 'note']


def fmt(v, spec='.0f'):
    """``v`` formatted, '-' when missing."""
    return '-' if v is None or v == '' or (isinstance(v, float) and math.isnan(v)) \
        else format(v, spec)


def inference(rows, compiled=False) -> list:
    """The inference rows, eager ones (or with ``compiled`` the compiled ones too)."""
    return [r for r in rows if r.get('mode', 'infer') == 'infer' and
            (compiled or not r.get('compiled'))]


def ratio_key(r) -> tuple:
    """What a row is compared on with UFO-ViT-S12/16's: the same mode,
    precision, input, batch and with_cp."""
    return (r.get('mode', 'infer'), r['precision'], r['height'], r['width'], r.get('batch', 1),
            bool(r.get('with_cp')))


def add_ratios(rows):
    """Time and memory ratios of every backbone row (compiled ones too) to eager
    UFO-ViT-S12/16 at the same :func:`ratio_key` (in place)."""
    ref = {ratio_key(r): r for r in rows
           if r['model'] == REFERENCE and r['status'] == 'ok' and not r.get('compiled')}
    for r in rows:
        u = ref.get(ratio_key(r))
        ok = r['status'] == 'ok' and u is not None and MODELS[r['model']]['kind'] == 'backbone'
        r['time_ratio_vs_ufo_s12'] = r['time_ms_median'] / u['time_ms_median'] if ok else None
        r['mem_ratio_vs_ufo_s12'] = (r['fwd_mem_mb'] / u['fwd_mem_mb'] if ok and u['fwd_mem_mb']
                                     and r.get('fwd_mem_mb') is not None else None)


def print_table(rows, threads):
    """The inference results table on stdout, if any (the training steps: :func:`train_table`)."""
    if not inference(rows, compiled=True):
        return
    print(f'\nCPU inference, batch 1, torch threads = {threads}; times are medians '
          f'(backbones: of rounds interleaved with the peers at the same size); '
          f'x{MODELS[REFERENCE]["label"]} = peer / UFO-ViT-S12/16 at the same size and precision; '
          f'compile s: first call of torch.compile(model)')
    head = (f'{"model":30s} {"prec":13s} {"input":>9s} {"time ms":>9s} {"xUFO":>6s} '
            f'{"fwd MB":>8s} {"xUFO":>6s} {"peak MB":>8s} {"GFLOPs":>7s} {"compile s":>9s} '
            f'{"other":>5s}  status')
    print(head)
    print('-' * len(head))
    for r in inference(rows, compiled=True):
        print(f'{r["label"]:30s} {r["precision"]:13s} {r["height"]:>4d}x{r["width"]:<4d} '
              f'{fmt(r.get("time_ms_median")):>9s} '
              f'{fmt(r.get("time_ratio_vs_ufo_s12"), ".2f"):>6s} '
              f'{fmt(r.get("fwd_mem_mb")):>8s} {fmt(r.get("mem_ratio_vs_ufo_s12"), ".2f"):>6s} '
              f'{fmt(r.get("peak_rss_mb")):>8s} {fmt(r.get("gflops"), ".1f"):>7s} '
              f'{fmt(r.get("compile_s"), ".1f"):>9s} '
              f'{fmt(r.get("other_cpu"), ".2f"):>5s}  {r["status"]}')


def summary(rows, gemm):
    """The headline numbers: S12 scaling, FLOP rate vs GEMM, who beats whom
    (eager inference); what compiling gains; the training steps against Swin-T."""
    lines, everything, rows = [], rows, inference(rows)
    get = {(r['model'], r['precision'], r['height'], r['width']): r for r in rows}
    for prec in ('fp32', 'bf16', 'bf16-emulated'):
        a, b = get.get((REFERENCE, prec, 1024, 1024)), get.get((REFERENCE, prec, 2048, 2048))
        if a and b and a['status'] == b['status'] == 'ok':
            lines.append(f'UFO-ViT-S12/16 {prec}: time(2048)/time(1024) = '
                         f'{b["time_ms_median"] / a["time_ms_median"]:.2f} '
                         f'(pixels x4; target <= 4.3)')
    a = get.get((REFERENCE, 'fp32', 1024, 1024))
    if a and a['status'] == 'ok' and a.get('gflops') and gemm.get('fp32'):
        rate = a['gflops'] / (a['time_ms_median'] / 1e3)
        g = gemm['fp32']['gflop_per_s']
        lines.append(f'UFO-ViT-S12/16 fp32 1024x1024: {a["gflops"]:.1f} GFLOP in '
                     f'{a["time_ms_median"]:.0f} ms = {rate:.1f} GFLOP/s; plain fp32 GEMM '
                     f'4096^3: {g:.1f} GFLOP/s -> {100 * rate / g:.0f}% (target >= 60%; '
                     f'GEMM: the faster of torch.mm and oneDNN, start or end of the run: '
                     f'{gemm["fp32"]["note"]})')
    for prec in ('bf16', 'bf16-emulated'):
        if gemm.get(prec):
            lines.append(f'plain {prec} GEMM 4096^3: {gemm[prec]["gflop_per_s"]:.1f} GFLOP/s '
                         f'({gemm[prec]["note"]})')
    for prec in ('fp32', 'bf16', 'bf16-emulated'):
        for H in (1024, 2048):
            u = get.get((REFERENCE, prec, H, H))
            if not u or u['status'] != 'ok':
                continue
            peers = [r for r in rows if r['precision'] == prec and r['height'] == H and
                     r['width'] == H and r['model'] in PEERS]
            faster = [r['label'] for r in peers if r['status'] == 'ok' and
                      r['time_ms_median'] < u['time_ms_median']]
            not_run = [f'{r["label"]} ({r["status"]})' for r in peers if r['status'] != 'ok']
            lines.append(f'{prec} {H}x{H}: UFO-ViT-S12/16 {u["time_ms_median"]:.0f} ms, '
                         f'{u["fwd_mem_mb"]:.0f} MB; faster peers: {", ".join(faster) or "none"}'
                         + (f'; not run: {", ".join(not_run)}' if not_run else ''))
            swin = get.get(('swin_t', prec, H, H))
            if swin and swin['status'] == 'ok':
                lines.append(f'    memory vs Swin-T: forward {u["fwd_mem_mb"]:.0f} vs '
                             f'{swin["fwd_mem_mb"]:.0f} MB, peak RSS {u["peak_rss_mb"]:.0f} vs '
                             f'{swin["peak_rss_mb"]:.0f} MB')
    for r in rows:
        if MODELS[r['model']]['kind'] != 'backbone':
            lines.append(f'{r["label"]} {r["precision"]} {r["height"]}x{r["width"]}: '
                         + (f'{r["time_ms_median"] / 1e3:.1f} s, peak RSS '
                            f'{r["peak_rss_mb"] / 1024:.2f} GiB'
                            if r['status'] == 'ok' else r['status']))
    return lines + compiled_summary(everything) + train_summary(everything)


def compiled_summary(rows) -> list:
    """One line per compiled row: its time against its eager twin's, and its first call."""
    eager = {ratio_key(r) + (r['model'],): r for r in rows
             if r['status'] == 'ok' and not r.get('compiled')}
    lines = []
    for r in rows:
        e = eager.get(ratio_key(r) + (r['model'],))
        if not r.get('compiled') or e is None:
            continue
        where = (f'{r["label"]} {r.get("mode", "infer")} {r["precision"]} '
                 f'{r["height"]}x{r["width"]}'
                 + (f' batch {r["batch"]}' if r.get('batch', 1) > 1 else ''))
        lines.append(f'{where}: ' + (
            f'{r["time_ms_median"]:.0f} ms vs eager {e["time_ms_median"]:.0f} ms '
            f'(x{r["time_ms_median"] / e["time_ms_median"]:.2f}); first call (compile) '
            f'{r["compile_s"]:.1f} s' if r['status'] == 'ok' else r['status']))
    return lines


def train_summary(rows) -> list:
    """UFO-ViT-S12/16's training step against Swin-T's, per input and with_cp."""
    get = {ratio_key(r) + (r['model'],): r for r in rows
           if r.get('mode') == 'train' and r['status'] == 'ok' and not r.get('compiled')}
    lines = []
    for key, u in get.items():
        swin = get.get(key[:-1] + ('swin_t',))
        if key[-1] == REFERENCE and swin:
            lines.append(f'training step {u["height"]}x{u["width"]} batch {u["batch"]}'
                         f'{" with_cp" if u["with_cp"] else ""}: UFO-ViT-S12/16 '
                         f'{u["time_ms_median"]:.0f} ms, {u["fwd_mem_mb"]:.0f} MB; Swin-T '
                         f'{swin["time_ms_median"]:.0f} ms, {swin["fwd_mem_mb"]:.0f} MB')
    return lines


def write_csv(rows, path):
    """One row per case, :data:`CSV_COLUMNS`, floats to 3 decimals."""
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction='ignore')
        w.writeheader()
        for r in rows:
            w.writerow({k: ('' if r.get(k) is None else
                            round(r[k], 3) if isinstance(r.get(k), float) else r[k])
                        for k in CSV_COLUMNS})


def table_cell(r, key, ratio_col=None, spec='.0f'):
    """A markdown cell: the row's ``key`` (and its ratio to UFO-ViT-S12/16), its
    status when not measured, '-' when this row has no such value."""
    if r is None:
        return ''
    if r['status'] != 'ok':
        return r['status'].split(' (')[0] + (' (OOM risk)' if 'OOM' in r['status'] else '')
    v = fmt(r.get(key), spec)
    if ratio_col and r.get(ratio_col) is not None and (r['model'] != REFERENCE or
                                                       r.get('compiled')):
        v += f' (x{r[ratio_col]:.2f})'
    return v


def markdown_tables(rows) -> str:
    """Backbone inference time and memory tables (models x input sizes; with
    compiled rows their first-call table), the training steps and the full models."""
    infer = inference(rows, compiled=True)
    shapes = sorted({(r['height'], r['width']) for r in infer if r['kind'] == 'backbone'},
                    key=lambda hw: (hw[0] * hw[1], hw))
    get = {(r['model'], bool(r.get('compiled')), r['precision'], r['height'], r['width']): r
           for r in infer}
    names = list(dict.fromkeys((r['model'], bool(r.get('compiled')), r['label'])
                               for r in infer if r['kind'] == 'backbone'))
    out = []
    tables = [('time_ms_median', 'time_ratio_vs_ufo_s12',
               'forward time, ms, median of rounds interleaved with the other models '
               '(x = model / UFO-ViT-S12/16)', '.0f'),
              ('fwd_mem_mb', 'mem_ratio_vs_ufo_s12',
               'forward memory, MB: peak RSS - RSS after build (x = model / UFO-ViT-S12/16; '
               'compiled rows: not measured)', '.0f'),
              ('peak_rss_mb', None, 'peak RSS of the process, MB', '.0f')]
    if any(n[1] for n in names):
        tables.append(('compile_s', None, 'torch.compile: first call, s (cold inductor '
                       'cache: the compile and one run)', '.1f'))
    for prec in dict.fromkeys(r['precision'] for r in infer if r['kind'] == 'backbone'):
        for key, ratio_col, what, spec in tables:
            out.append(f'\n**{prec}: {what}**\n')
            out.append('| model | ' + ' | '.join(f'{h}x{w}' for h, w in shapes) + ' |')
            out.append('|---|' + '---:|' * len(shapes))
            for n, compiled, label in names:
                if key == 'compile_s' and not compiled:
                    continue
                cells = [table_cell(get.get((n, compiled, prec, h, w)), key, ratio_col, spec)
                         for h, w in shapes]
                out.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    out += train_table(rows)
    full = [r for r in rows if r['kind'] != 'backbone']
    if full:
        out.append('\n**full models (batch 1, random weights)**\n')
        out.append('| model | precision | input | time, s | peak RSS, GiB | forward memory, GiB |')
        out.append('|---|---|---|---:|---:|---:|')
        for r in full:
            ok = r['status'] == 'ok'
            out.append(f'| {r["label"]} | {r["precision"]} | {r["height"]}x{r["width"]} | '
                       + (f'{r["time_ms_median"] / 1e3:.1f} | {r["peak_rss_mb"] / 1024:.2f} | '
                          f'{r["fwd_mem_mb"] / 1024:.2f} |' if ok else f'{r["status"]} | | |'))
    return '\n'.join(out) + '\n'


def train_table(rows) -> list:
    """The training steps as markdown lines, one row per case (none without them)."""
    train = [r for r in rows if r.get('mode') == 'train']
    if not train:
        return []
    out = ['\n**training step of the backbone (train mode, forward + backward of the sum of '
           'the outputs\' means, fp32): time, ms, median of rounds interleaved with the other '
           'cases at that input and batch (x = case / UFO-ViT-S12/16 with the same with_cp); '
           'step memory, MB: peak RSS - RSS after build (compiled rows: not measured)**\n',
           '| model | input | batch | step time, ms | step memory, MB | peak RSS, MB | '
           'compile, s |', '|---|---|---:|---:|---:|---:|---:|']
    for r in train:
        out.append(f'| {r["label"]} | {r["height"]}x{r["width"]} | {r["batch"]} | '
                   f'{table_cell(r, "time_ms_median", "time_ratio_vs_ufo_s12")} | '
                   f'{table_cell(r, "fwd_mem_mb", "mem_ratio_vs_ufo_s12")} | '
                   f'{table_cell(r, "peak_rss_mb")} | {table_cell(r, "compile_s", spec=".1f")} |')
    return out


def plot(rows, path, threads):
    """Eager forward time and memory against megapixels, log-log, one line per
    model and precision (squares: the non-square inputs)."""
    rows = inference(rows)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    names = list(dict.fromkeys(r['model'] for r in rows))
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for ax, key, ylabel in ((axes[0], 'time_ms_median', 'forward time (ms)'),
                            (axes[1], 'fwd_mem_mb', 'forward memory: peak RSS - base (MB)')):
        for n in names:
            for prec, style in (('fp32', '-'), ('bf16', '--'), ('bf16-emulated', ':')):
                pts = sorted((r['megapixels'], r[key]) for r in rows
                             if r['model'] == n and r['precision'] == prec and
                             r['status'] == 'ok' and r['height'] == r['width'] and r[key])
                if not pts:
                    continue
                lw = 2.5 if n == REFERENCE else 1.3
                label = f'{MODELS[n]["label"]} {prec}'
                ax.plot(*zip(*pts), style, marker='o', ms=3, lw=lw, color=colors[n],
                        label=label)
                rect = [(r['megapixels'], r[key]) for r in rows
                        if r['model'] == n and r['precision'] == prec and r['status'] == 'ok'
                        and r['height'] != r['width'] and r[key]]
                if rect:
                    ax.plot(*zip(*rect), marker='s', ls='none', mfc='none', color=colors[n])
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('input megapixels (squares: 1024x2048)')
        ax.set_ylabel(ylabel)
        ax.grid(True, which='both', alpha=0.3)
    if axes[0].lines:  # none in a run of training steps only
        axes[0].legend(fontsize=6.5, ncol=2)
    fig.suptitle(f'CPU inference, batch 1, {threads} threads (solid fp32, dashed bf16 autocast)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)




def write_outputs(rows, lines, out_dir, threads):
    """benchmark.csv, benchmark.png, benchmark_summary.txt (``lines``) and
    benchmark_tables.md in ``out_dir``; returns the CSV and PNG paths."""
    csv_path = osp.join(out_dir, 'benchmark.csv')
    png_path = osp.join(out_dir, 'benchmark.png')
    write_csv(rows, csv_path)
    plot(rows, png_path, threads)
    with open(osp.join(out_dir, 'benchmark_summary.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(osp.join(out_dir, 'benchmark_tables.md'), 'w') as f:
        f.write(markdown_tables(rows))
    return csv_path, png_path
