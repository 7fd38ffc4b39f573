"""Each benchmark case in a fresh process forked from a pre-imported server
(fresh memory accounting without paying the imports each time), its resident
set watched; rerun when other processes disturbed its timing."""
import time

from ufo_mm.analysis.process_stats import rss_bytes

from .measure import error_status, run_case


def _child(spec, conn):
    """The process side: measure ``spec`` and send the result (or the error) back."""
    try:
        conn.send(run_case(spec))
    except Exception as e:  # reported as the case's status, the run goes on
        conn.send(dict(status=error_status(e)))
    finally:
        conn.close()


def run_isolated(ctx, spec: dict, mem_kill_bytes: float, timeout_s: float) -> dict:
    """Run one case in a fresh process forked from a pre-imported server, watching
    its resident set; kill it past ``mem_kill_bytes`` or ``timeout_s``."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, send))
    proc.start()
    send.close()
    t0 = time.time()
    result = None
    while True:
        if recv.poll(0.1):
            try:
                result = recv.recv()
            except EOFError:
                result = None
            break
        if not proc.is_alive():
            break
        if rss_bytes(proc.pid) > mem_kill_bytes:
            proc.kill()
            result = dict(status=f'killed (RSS > {mem_kill_bytes / 2**30:.0f} GiB)')
            break
        if time.time() - t0 > timeout_s:
            proc.kill()
            result = dict(status=f'killed (> {timeout_s:.0f} s)')
            break
    proc.join()
    if result is None:
        result = dict(status=f'crashed (exit code {proc.exitcode})')
    return result


def measure(ctx, spec: dict, args, mem_kill: float, timeout_s: float = None) -> dict:
    """Run a case; while other processes took more than ``args.max_other_cpu`` cores
    during its timed runs, wait ``args.retry_wait_s`` and run it again
    (``args.retries`` times), keeping the least disturbed result."""
    best = None
    for attempt in range(args.retries + 1):
        if attempt:
            time.sleep(args.retry_wait_s)
        res = run_isolated(ctx, spec, mem_kill, timeout_s or args.case_timeout_s)
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
