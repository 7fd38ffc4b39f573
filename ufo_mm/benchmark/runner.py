"""The benchmark run: which cases, which are skipped as too large, each
measured in its own process, the backbones timed again interleaved, the
reference GEMM at the start and the end (:class:`Benchmark`)."""
import multiprocessing as mp

from .isolation import measure, run_isolated
from .report import add_ratios
from .zoo import MODELS


def parse_shape(s: str):
    if 'x' in s:
        h, w = s.lower().split('x')
        return int(h), int(w)
    return int(s), int(s)


def plan_cases(args):
    shapes = sorted({parse_shape(s) for s in args.sizes} | {parse_shape(s) for s in args.shapes},
                    key=lambda hw: (hw[0] * hw[1], hw))
    cases = []
    for name in args.models:
        if MODELS[name]['kind'] == 'backbone':
            model_shapes, precisions = shapes, args.precisions
        else:
            model_shapes = sorted({parse_shape(s) for s in args.full_sizes},
                                  key=lambda hw: hw[0] * hw[1])
            precisions = args.full_precisions
        for prec in precisions:
            for H, W in model_shapes:
                cases.append(dict(model=name, height=H, width=W, precision=prec))
    return cases


def estimate(prev: dict, case: dict):
    """Time (s) and resident set (bytes) of ``case`` extrapolated from the same
    model's largest measured case, by the model's growth exponents."""
    if prev is None:
        return None, None
    info = MODELS[case['model']]
    r = case['height'] * case['width'] / (prev['height'] * prev['width'])
    t = prev['time_ms_median'] / 1e3 * r ** info['time_exp']
    mem = prev['base_rss_mb'] * 2**20 + prev['fwd_mem_mb'] * 2**20 * r ** info['mem_exp']
    return t, mem


def resolve_precisions(requested):
    """The precisions to run: the default is fp32, plus bf16 where it is native;
    bf16 asked for on a CPU without native bf16 becomes 'bf16-emulated'."""
    from ufo_mm import cpu_features
    native = cpu_features.bf16_native()
    if requested is None:
        return ['fp32', 'bf16'] if native else ['fp32']
    return [p if p != 'bf16' or native else 'bf16-emulated' for p in requested]


class Benchmark:
    """One benchmark run over the cases of ``args`` (``tools/benchmark.py``'s
    options: models, sizes, precisions, threads, warm-up, repeats, limits,
    retries). :meth:`run` returns the result rows and fills :attr:`gemm`
    (precision -> the faster reference GEMM measurement)."""

    def __init__(self, args):
        self.args = args
        self.ctx = mp.get_context('forkserver')
        # Each case runs in a process forked from a server that has imported these
        # once: fresh memory accounting per case without paying the imports each time.
        self.ctx.set_forkserver_preload(['torch', 'ufo_mm', 'mmdet.models', 'mmseg.models'])
        self.mem_kill = args.mem_kill_gb * 2**30
        self.common = dict(threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                           max_timed_s=args.max_timed_s)
        self.gemm = {}

    def measure_gemm(self, when: str):
        """The reference GEMM, at the start and at the end of the run: the
        faster measurement is kept (a shared machine has slow phases)."""
        for prec in sorted(set(self.args.precisions) | {'fp32'}):
            res = run_isolated(self.ctx, dict(self.common, model='gemm', precision=prec),
                               self.mem_kill, self.args.case_timeout_s)
            if res['status'] == 'ok':
                print(f'plain {prec} GEMM 4096^3 ({when}): {res["gflop_per_s"]:.1f} GFLOP/s '
                      f'({res["note"]})', flush=True)
                if prec not in self.gemm or res['gflop_per_s'] > self.gemm[prec]['gflop_per_s']:
                    self.gemm[prec] = res

    def measure_case(self, case: dict, last: dict) -> dict:
        """The row of one case: skipped when extrapolated from ``last`` (the same
        model's previous size) past the limits, else measured alone."""
        args = self.args
        info = MODELS[case['model']]
        row = dict(case, label=info['label'], kind=info['kind'], threads=args.threads,
                   megapixels=case['height'] * case['width'] / 1e6)
        t_est, mem_est = estimate(last, case)
        if mem_est is not None and mem_est > args.mem_budget_gb * 2**30:
            row['status'] = 'skipped (OOM risk)'
            row['note'] = f'estimated {mem_est / 2**30:.1f} GiB > {args.mem_budget_gb:g} GiB'
        elif t_est is not None and t_est > args.max_forward_s:
            row['status'] = 'skipped (time)'
            row['note'] = f'estimated {t_est:.0f} s per forward > {args.max_forward_s:g} s'
        else:
            spec = dict(self.common, **case)
            backbone = info['kind'] == 'backbone'
            spec['flops'] = (not args.no_flops and backbone and
                             case['height'] * case['width'] <= 1024 * 1024)
            if backbone:  # timed again below, interleaved with its peers
                spec['repeats'] = 1
            row.update(measure(self.ctx, spec, args, self.mem_kill))
            if row['status'] == 'ok':
                row['time_ms_alone'] = row['time_ms_median']
                row['timing'] = 'alone'
        return row

    def run(self) -> list:
        """Every case, printed as it finishes; then the interleaved timing, the
        closing GEMM and the ratios."""
        self.measure_gemm('start of the run')
        rows, last = [], {}
        for case in plan_cases(self.args):
            key = (case['model'], case['precision'])
            row = self.measure_case(case, last.get(key))
            if row['status'] == 'ok':
                last[key] = row
            rows.append(row)
            print(f'  {row["label"]:24s} {row["precision"]} {row["height"]}x{row["width"]}: '
                  + (f'{row["time_ms_median"]:.0f} ms alone, fwd mem {row["fwd_mem_mb"]:.0f} MB, '
                     f'peak {row["peak_rss_mb"]:.0f} MB' if row['status'] == 'ok'
                     else row['status'] + (f' ({row["note"]})' if row.get('note') else '')),
                  flush=True)
        self.time_interleaved(rows)
        self.measure_gemm('end of the run')
        add_ratios(rows)
        return rows

    def time_interleaved(self, rows):
        """Replace the backbones' times by interleaved ones (``measure.run_group``):
        one process per (precision, input) with every backbone that ran there."""
        args = self.args
        groups = {}
        for r in rows:
            if r['kind'] == 'backbone' and r['status'] == 'ok':
                groups.setdefault((r['precision'], r['height'], r['width']), []).append(r)
        for (prec, H, W), members in groups.items():
            spec = dict(self.common, model='group', models=[r['model'] for r in members],
                        precision=prec, height=H, width=W)
            res = measure(self.ctx, spec, args, self.mem_kill,
                          timeout_s=args.case_timeout_s * len(members))
            if res['status'] != 'ok':
                for r in members:
                    r['note'] = f'interleaved timing failed ({res["status"]}): time alone'
                print(f'  interleaved {prec} {H}x{W}: {res["status"]}', flush=True)
                continue
            for r in members:
                r.update(res['models'][r['model']], other_cpu=res['other_cpu'])
                if res.get('note'):
                    r['note'] = res['note']
            print(f'  interleaved {prec} {H}x{W}: ' + ', '.join(
                f'{r["label"]} {r["time_ms_median"]:.0f} ms' for r in members), flush=True)
