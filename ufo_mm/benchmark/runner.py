"""The benchmark run: which cases (inference; with ``--compile`` their
``torch.compile`` twins; with ``--train`` training steps), which are skipped
as too large, each measured in its own process (forked from a server that
imported torch, ufo_mm, mmdet's and mmseg's models once:
:class:`~ufo_mm.benchmark.harness.Forkserver`), rerun when other processes
disturbed its timing, the backbones timed again interleaved, the reference
GEMM at the start and the end (:class:`Benchmark`)."""
import time

from .harness import Forkserver, run_in_child
from .report import add_ratios
from .zoo import MODELS, case_label

#: the case module the children run (:func:`ufo_mm.benchmark.measure.run_case`)
CASE_MODULE = 'ufo_mm.benchmark.measure'


def parse_shape(s: str):
    if 'x' in s:
        h, w = s.lower().split('x')
        return int(h), int(w)
    return int(s), int(s)


def parse_train_size(s: str):
    """'512:2' -> (512, 512, 2): an input (side or HxW) and the batch, 1 when
    left out ('1024x2048' -> (1024, 2048, 1))."""
    shape, _, batch = s.partition(':')
    return parse_shape(shape) + (int(batch or 1),)


def variants(case: dict, compile_too: bool) -> list:
    """``case`` and, with ``compile_too``, its ``torch.compile`` twin right after it."""
    return [case] + ([dict(case, compile=True)] if compile_too else [])


def plan_cases(args):
    """The inference cases: each backbone at every input and precision (with
    ``args.compile``: each followed by its compiled twin), the full models at
    theirs. Inputs smallest first."""
    shapes = sorted({parse_shape(s) for s in args.sizes} | {parse_shape(s) for s in args.shapes},
                    key=lambda hw: (hw[0] * hw[1], hw))
    cases = []
    for name in args.models:
        backbone = MODELS[name]['kind'] == 'backbone'
        if backbone:
            model_shapes, precisions = shapes, args.precisions
        else:
            model_shapes = sorted({parse_shape(s) for s in args.full_sizes},
                                  key=lambda hw: hw[0] * hw[1])
            precisions = args.full_precisions
        for prec in precisions:
            for H, W in model_shapes:
                case = dict(model=name, height=H, width=W, precision=prec, mode='infer', batch=1)
                cases += variants(case, backbone and args.compile)
    return cases


def plan_train_cases(args):
    """With ``args.train``: the training-step cases, fp32, each of
    ``args.train_models`` at every ``args.train_sizes`` ('SIDE[xW][:BATCH]'),
    without and with ``with_cp`` (with ``args.compile``: each followed by its
    compiled twin). Inputs smallest first."""
    if not args.train:
        return []
    sizes = sorted({parse_train_size(s) for s in args.train_sizes},
                   key=lambda hwb: (hwb[0] * hwb[1] * hwb[2], hwb))
    cases = []
    for name in args.train_models:
        for H, W, batch in sizes:
            for with_cp in (False, True):
                case = dict(model=name, height=H, width=W, precision='fp32', mode='train',
                            batch=batch, with_cp=with_cp)
                cases += variants(case, args.compile)
    return cases


def series(case: dict) -> tuple:
    """What a case shares with the cases it is extrapolated from: all but the input."""
    return (case['model'], case['precision'], case.get('mode', 'infer'),
            case.get('with_cp', False), case.get('compile', False))


def estimate(prev: dict, case: dict):
    """Time (s) and resident set (bytes) of ``case`` extrapolated from the same
    model's largest measured case, by the model's growth exponents (the batch
    counts as pixels)."""
    if prev is None:
        return None, None
    info = MODELS[case['model']]
    r = (case['height'] * case['width'] * case.get('batch', 1)
         / (prev['height'] * prev['width'] * prev.get('batch', 1)))
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
    options: models, sizes, precisions, compile, train models and sizes,
    threads, warm-up, repeats, limits, retries). :meth:`run` returns the
    result rows and fills :attr:`gemm` (precision -> the faster reference
    GEMM measurement)."""

    def __init__(self, args):
        self.args = args
        # Each case runs in a process forked from a server that has imported these
        # once: fresh memory accounting per case without paying the imports each time.
        self.forkserver = Forkserver(['torch', 'ufo_mm', 'mmdet.models', 'mmseg.models',
                                      CASE_MODULE])
        self.common = dict(threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                           max_timed_s=args.max_timed_s)
        self.gemm = {}

    def measure_in_child(self, spec: dict, timeout_s: float = None) -> dict:
        """``measure.run_case(spec)`` in a child forked for it, killed past
        ``--mem-kill-gb`` or ``timeout_s`` (default ``--case-timeout-s``)."""
        return run_in_child(CASE_MODULE, spec, self.args.mem_kill_gb,
                            timeout_s or self.args.case_timeout_s, forkserver=self.forkserver)

    def measure_undisturbed(self, spec: dict, timeout_s: float = None) -> dict:
        """:meth:`measure_in_child`; while other processes took more than
        ``--max-other-cpu`` cores during its timed runs, wait ``--retry-wait-s``
        and run it again (``--retries`` times), keeping the least disturbed
        result."""
        args, best = self.args, None
        for attempt in range(args.retries + 1):
            if attempt:
                time.sleep(args.retry_wait_s)
            res = self.measure_in_child(spec, timeout_s)
            if res['status'] != 'ok':
                return res
            if best is None or res['other_cpu'] < best['other_cpu']:
                best = res
            if res['other_cpu'] <= args.max_other_cpu:
                break
        if attempt:
            best['note'] = f'{attempt + 1} runs (other processes used CPU)'
        if best['other_cpu'] > args.max_other_cpu:
            best['note'] = f'disturbed: other processes used {best["other_cpu"]:.2f} cores'
        return best

    def measure_gemm(self, when: str):
        """The reference GEMM, at the start and at the end of the run: the
        faster measurement is kept (a shared machine has slow phases)."""
        for prec in sorted(set(self.args.precisions) | {'fp32'}):
            res = self.measure_in_child(dict(self.common, model='gemm', precision=prec))
            if res['status'] == 'ok':
                print(f'plain {prec} GEMM 4096^3 ({when}): {res["gflop_per_s"]:.1f} GFLOP/s '
                      f'({res["note"]})', flush=True)
                if prec not in self.gemm or res['gflop_per_s'] > self.gemm[prec]['gflop_per_s']:
                    self.gemm[prec] = res

    def measure_case(self, case: dict, last: dict) -> dict:
        """The row of one case: skipped when extrapolated from ``last`` (the same
        series' previous size) past the limits, else measured alone (memory;
        a compiled case only in the interleaved rounds: a second compile)."""
        args = self.args
        info = MODELS[case['model']]
        row = dict(case, label=case_label(case), kind=info['kind'], threads=args.threads,
                   megapixels=case['height'] * case['width'] / 1e6,
                   with_cp=case.get('with_cp', False), compiled=case.get('compile', False))
        t_est, mem_est = estimate(last, case)
        if mem_est is not None and mem_est > args.mem_budget_gb * 2**30:
            row['status'] = 'skipped (OOM risk)'
            row['note'] = f'estimated {mem_est / 2**30:.1f} GiB > {args.mem_budget_gb:g} GiB'
        elif t_est is not None and t_est > args.max_forward_s:
            row['status'] = 'skipped (time)'
            row['note'] = f'estimated {t_est:.0f} s per forward > {args.max_forward_s:g} s'
        elif row['compiled']:
            row['status'] = 'ok'  # until the interleaved rounds say otherwise
        else:
            spec = dict(self.common, **case)
            backbone = info['kind'] == 'backbone'
            spec['flops'] = (not args.no_flops and backbone and case['mode'] == 'infer' and
                             case['height'] * case['width'] <= 1024 * 1024)
            if backbone:  # timed again below, interleaved with its peers
                spec['repeats'] = 1
            row.update(self.measure_undisturbed(spec))
            if row['status'] == 'ok':
                row['time_ms_alone'] = row['time_ms_median']
                row['timing'] = 'alone'
        return row

    def run(self) -> list:
        """Every case, printed as it finishes (a compiled one skipped where its
        eager twin was); then the interleaved timing, the closing GEMM and the
        ratios."""
        self.measure_gemm('start of the run')
        rows, last = [], {}
        for case in plan_cases(self.args) + plan_train_cases(self.args):
            if case.get('compile') and rows[-1]['status'] != 'ok':  # its eager twin
                row = self.measure_case(case, None)
                row.update(status=rows[-1]['status'], note='as the eager case')
            else:
                row = self.measure_case(case, last.get(series(case)))
            if row['status'] == 'ok' and not row['compiled']:
                last[series(case)] = row
            rows.append(row)
            input_ = f'{row["height"]}x{row["width"]}' + (
                f' batch {row["batch"]}' if row['batch'] > 1 else '')
            if row['status'] == 'ok' and row['compiled']:
                outcome = 'compiled, timed in the interleaved rounds'
            elif row['status'] == 'ok':
                outcome = (f'{row["time_ms_median"]:.0f} ms alone, '
                           f'{"step" if row["mode"] == "train" else "fwd"} mem '
                           f'{row["fwd_mem_mb"]:.0f} MB, peak {row["peak_rss_mb"]:.0f} MB')
            else:
                outcome = row['status'] + (f' ({row["note"]})' if row.get('note') else '')
            print(f'  {row["mode"]} {row["label"]:24s} {row["precision"]} {input_}: {outcome}',
                  flush=True)
        self.time_interleaved(rows)
        self.measure_gemm('end of the run')
        add_ratios(rows)
        return rows

    def time_interleaved(self, rows):
        """Time the backbones' cases again, interleaved (``measure.run_group``):
        one process per (mode, precision, input, batch) with every case that
        ran there (eager, compiled, with_cp). An eager case whose interleaved
        timing failed keeps its time alone; a compiled one takes the failure."""
        args = self.args
        groups = {}
        for r in rows:
            if r['kind'] == 'backbone' and r['status'] == 'ok':
                groups.setdefault((r['mode'], r['precision'], r['height'], r['width'],
                                   r['batch']), []).append(r)
        for (mode, prec, H, W, batch), members in groups.items():
            spec = dict(self.common, model='group', precision=prec, height=H, width=W,
                        mode=mode, batch=batch,
                        members=[dict(model=r['model'], with_cp=r['with_cp'],
                                      compile=r['compiled']) for r in members])
            res = self.measure_undisturbed(spec, timeout_s=args.case_timeout_s * len(members))
            where = f'  interleaved {mode} {prec} {H}x{W}' + (
                f' batch {batch}' if batch > 1 else '')
            if res['status'] != 'ok':
                for r in members:
                    if r['compiled']:
                        r['status'] = f'interleaved run {res["status"]}'
                    else:
                        r['note'] = f'interleaved timing failed ({res["status"]}): time alone'
                print(f'{where}: {res["status"]}', flush=True)
                continue
            for r, m in zip(members, res['members']):
                if m['status'] != 'ok' and not r['compiled']:
                    r['note'] = f'interleaved timing failed ({m["status"]}): time alone'
                    continue
                r.update(m, other_cpu=res['other_cpu'])
                if res.get('note'):
                    r['note'] = res['note']
            print(f'{where}: ' + ', '.join(
                f'{r["label"]} ' + (f'{r["time_ms_median"]:.0f} ms' if r['status'] == 'ok'
                                    else r['status'])
                + (f' (first call {r["compile_s"]:.1f} s)' if r.get('compile_s') else '')
                for r in members), flush=True)
