"""The benchmark's results: ratios to UFO-ViT-S12/16, the printed table, the
headline summary, the CSV, the markdown tables and the plot."""
import csv
import math
import os.path as osp

from .zoo import MODELS, PEERS, REFERENCE

CSV_COLUMNS = ['model', 'label', 'kind', 'precision', 'height', 'width', 'megapixels',
               'threads', 'status', 'time_ms_median', 'time_ms_min', 'repeats', 'timing',
               'time_ms_alone', 'peak_rss_mb', 'base_rss_mb', 'fwd_mem_mb', 'gflops', 'other_cpu',
               'time_ratio_vs_ufo_s12', 'mem_ratio_vs_ufo_s12', 'note']


def fmt(v, spec='.0f'):
    """``v`` formatted, '-' when missing."""
    return '-' if v is None or v == '' or (isinstance(v, float) and math.isnan(v)) \
        else format(v, spec)


def add_ratios(rows):
    """Time and forward-memory ratios of every backbone row to UFO-ViT-S12/16 at
    the same input and precision (in place)."""
    ref = {(r['precision'], r['height'], r['width']): r for r in rows
           if r['model'] == REFERENCE and r['status'] == 'ok'}
    for r in rows:
        u = ref.get((r['precision'], r['height'], r['width']))
        ok = r['status'] == 'ok' and u is not None and MODELS[r['model']]['kind'] == 'backbone'
        r['time_ratio_vs_ufo_s12'] = r['time_ms_median'] / u['time_ms_median'] if ok else None
        r['mem_ratio_vs_ufo_s12'] = (r['fwd_mem_mb'] / u['fwd_mem_mb']
                                     if ok and u['fwd_mem_mb'] > 0 else None)


def print_table(rows, threads):
    """The results table on stdout."""
    print(f'\nCPU inference, batch 1, torch threads = {threads}; times are medians '
          f'(backbones: of rounds interleaved with the peers at the same size); '
          f'x{MODELS[REFERENCE]["label"]} = peer / UFO-ViT-S12/16 at the same size and precision')
    head = (f'{"model":24s} {"prec":13s} {"input":>9s} {"time ms":>9s} {"xUFO":>6s} '
            f'{"fwd MB":>8s} {"xUFO":>6s} {"peak MB":>8s} {"GFLOPs":>7s} {"other":>5s}  status')
    print(head)
    print('-' * len(head))
    for r in rows:
        print(f'{r["label"]:24s} {r["precision"]:13s} {r["height"]:>4d}x{r["width"]:<4d} '
              f'{fmt(r.get("time_ms_median")):>9s} '
              f'{fmt(r.get("time_ratio_vs_ufo_s12"), ".2f"):>6s} '
              f'{fmt(r.get("fwd_mem_mb")):>8s} {fmt(r.get("mem_ratio_vs_ufo_s12"), ".2f"):>6s} '
              f'{fmt(r.get("peak_rss_mb")):>8s} {fmt(r.get("gflops"), ".1f"):>7s} '
              f'{fmt(r.get("other_cpu"), ".2f"):>5s}  {r["status"]}')


def summary(rows, gemm):
    """The headline numbers: S12 scaling, FLOP rate vs GEMM, who beats whom."""
    lines = []
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


def markdown_tables(rows) -> str:
    """Backbone time and memory tables (models x input sizes) and the full models."""
    shapes = sorted({(r['height'], r['width']) for r in rows if r['kind'] == 'backbone'},
                    key=lambda hw: (hw[0] * hw[1], hw))
    get = {(r['model'], r['precision'], r['height'], r['width']): r for r in rows}
    names = list(dict.fromkeys(r['model'] for r in rows if r['kind'] == 'backbone'))
    out = []

    def cell(r, key, ratio_key):
        if r is None:
            return ''
        if r['status'] != 'ok':
            return r['status'].split(' (')[0] + (' (OOM risk)' if 'OOM' in r['status'] else '')
        v = f'{r[key]:.0f}'
        if r.get(ratio_key) is not None and r['model'] != REFERENCE:
            v += f' (x{r[ratio_key]:.2f})'
        return v

    for prec in dict.fromkeys(r['precision'] for r in rows if r['kind'] == 'backbone'):
        for key, ratio_key, what in (('time_ms_median', 'time_ratio_vs_ufo_s12',
                                      'forward time, ms, median of rounds interleaved '
                                      'with the other models (x = model / UFO-ViT-S12/16)'),
                                     ('fwd_mem_mb', 'mem_ratio_vs_ufo_s12',
                                      'forward memory, MB: peak RSS - RSS after build '
                                      '(x = model / UFO-ViT-S12/16)'),
                                     ('peak_rss_mb', None, 'peak RSS of the process, MB')):
            out.append(f'\n**{prec}: {what}**\n')
            out.append('| model | ' + ' | '.join(f'{h}x{w}' for h, w in shapes) + ' |')
            out.append('|---|' + '---:|' * len(shapes))
            for n in names:
                cells = [cell(get.get((n, prec, h, w)), key, ratio_key) for h, w in shapes]
                out.append(f'| {MODELS[n]["label"]} | ' + ' | '.join(cells) + ' |')
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


def plot(rows, path, threads):
    """Forward time and memory against megapixels, log-log, one line per model
    and precision (squares: the non-square inputs)."""
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
