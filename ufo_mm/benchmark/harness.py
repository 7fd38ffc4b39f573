"""The one harness of the benchmarks: each case in a child process of its own,
watched, its row read back as one JSON line.

A *case* is a dict of JSON values. A *case module* (``zoo``'s CPU cases in
``measure``, ``large_image``, ``large_detection``) defines
``run_case(case) -> row``: it measures the case in the process that calls it
and returns the row, a dict with ``status`` ('ok' when measured) and what was
measured; :func:`measure_call` measures one call there (wall and CPU seconds,
the process's peak resident set).

:func:`run_in_child` runs one case in a child process:

- launched fresh (``python -m ufo_mm.benchmark.harness MODULE --case JSON``,
  in the repository, ``OMP_NUM_THREADS`` set to ``threads``), so that its
  peak resident set (``ru_maxrss``) is that case's alone, imports included;
  or forked from a :class:`Forkserver` that imported ``preload`` once (fresh
  memory accounting without paying the imports for every case);
- in the child :func:`case_row` calls the module's ``run_case``; an exception
  is the row's status (:func:`error_status`); the row is printed as the last
  line of the child's output, which goes to a file (a pipe's buffer would
  block a chatty child);
- the parent samples the child's resident set every ``poll_s``
  (:class:`Watchdog`, ``/proc``) and stops it past ``mem_limit_gb``
  ('out of memory (> N GiB)') or ``timeout_s`` ('timeout (> N s)'); a child
  that ends without a row is 'out of memory' when the kernel killed it
  (signal 9) or its last error line says so, else 'crashed (exit code N):
  the last line'. A failed case's row is its status and ``peak_rss_gb``, the
  peak the parent saw.

:func:`run_cases` runs cases in order so, each in its own child, skipping a
series' larger cases once one failed. :class:`Worker` is a child that stays
alive and answers requests, a JSON line each, under the same watchdog (the
A/B benchmark, whose workers import two different checkouts).

Nothing here imports torch, mmdet or mmseg: the GPU benchmarks import it on
machines without them.
"""
import argparse
import importlib
import json
import multiprocessing as mp
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence

from ufo_mm.analysis.process_stats import peak_rss_bytes, rss_bytes

#: the repository: the configs are read from here and children run here
ROOT = Path(__file__).resolve().parents[2]
#: what a fresh child runs (``python -m``)
CHILD_MODULE = 'ufo_mm.benchmark.harness'
POLL_S = 0.1


def error_status(e: BaseException) -> str:
    """The row status of a case that raised ``e``."""
    return f'error: {type(e).__name__}: {str(e)[:200]}'


# ---------------------------------------------------------------- in the child

def cpu_seconds() -> float:
    """CPU time (user + system) this process has used, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_call(fn):
    """``fn()`` measured: (its result, dict of wall ``seconds``, ``cpu_seconds``,
    the process's ``peak_rss_gb`` when it returned and ``ready_rss_gb``, the
    resident set before it began)."""
    rss_ready = rss_bytes()
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    result = fn()
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return result, dict(seconds=round(seconds, 2), cpu_seconds=round(cpu, 1),
                        peak_rss_gb=round(peak_rss_bytes() / 2**30, 3),
                        ready_rss_gb=round(rss_ready / 2**30, 3))


def case_row(module: str, case: dict) -> dict:
    """``module.run_case(case)``: the row of a case measured in this process;
    an exception (also one importing the module) is the row's status."""
    try:
        return importlib.import_module(module).run_case(case)
    except Exception as e:  # the case's status: the run goes on
        return dict(status=error_status(e))


def main(argv=None) -> None:
    """A fresh child's entry: the row of ``--case JSON`` by ``MODULE``, printed
    as the last line."""
    parser = argparse.ArgumentParser(description='one benchmark case, in this process')
    parser.add_argument('module', help='a module with run_case(case) -> row')
    parser.add_argument('--case', required=True, help='JSON of the case')
    args = parser.parse_args(argv)
    print(json.dumps(case_row(args.module, json.loads(args.case))), flush=True)


def _forked_child(module: str, case: dict, out_path: str, err_path: str) -> None:
    """A forked child's entry: its output to the files a fresh child's goes to,
    then as :func:`main`."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    print(json.dumps(case_row(module, case)), flush=True)


# ---------------------------------------------------------------- in the parent

class Watchdog:
    """A child's resident set, sampled: its peak kept, its limits checked.
    ``mem_limit_gb`` / ``timeout_s`` None: no limit."""

    def __init__(self, pid: int, mem_limit_gb: Optional[float] = None,
                 timeout_s: Optional[float] = None):
        self.pid, self.mem_limit_gb, self.timeout_s = pid, mem_limit_gb, timeout_s
        self.peak_bytes = 0
        self.restart()

    def restart(self) -> None:
        """The timeout counts from now."""
        self.t0 = time.monotonic()

    def breach(self) -> Optional[str]:
        """Sample once: the status of a limit the child passed, else None."""
        rss = rss_bytes(self.pid)
        self.peak_bytes = max(self.peak_bytes, rss)
        if self.mem_limit_gb is not None and rss > self.mem_limit_gb * 2**30:
            return f'out of memory (> {self.mem_limit_gb:g} GiB)'
        if self.timeout_s is not None and time.monotonic() - self.t0 > self.timeout_s:
            return f'timeout (> {self.timeout_s:.0f} s)'
        return None

    @property
    def peak_rss_gb(self) -> float:
        return round(self.peak_bytes / 2**30, 3)


def crash_status(exit_code: int, stderr: str) -> str:
    """The status of a child that ended without a row."""
    last = (stderr.strip().splitlines() or [''])[-1]
    if exit_code == -9 or 'memory' in last.lower():  # the kernel's OOM killer, MemoryError
        return 'out of memory'
    return f'crashed (exit code {exit_code})' + (f': {last[:200]}' if last else '')


def last_json_row(text: str) -> Optional[dict]:
    """The row a child printed last, None when its last line is none."""
    lines = text.strip().splitlines()
    try:
        row = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


class _Spawned:
    """A fresh interpreter running :func:`main` (``subprocess.Popen``)."""

    def __init__(self, module, case, out, err, threads):
        env = dict(os.environ)
        if threads is not None:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, '-m', CHILD_MODULE, module, '--case', json.dumps(case)],
            stdout=out, stderr=err, env=env, cwd=str(ROOT))
        self.pid = self.proc.pid

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Forkserver:
    """Children forked from a server process that imported ``preload`` (module
    names) once: each case still gets a fresh process (its own ``ru_maxrss``)
    without paying the imports. The thread count is the case's own business
    (``torch.set_num_threads``): a forked child keeps the server's
    environment."""

    def __init__(self, preload: Sequence[str] = ()):
        self.ctx = mp.get_context('forkserver')
        self.ctx.set_forkserver_preload([CHILD_MODULE] + list(preload))

    def start(self, module, case, out, err, threads=None) -> '_Forked':
        return _Forked(self.ctx, module, case, out.name, err.name)


class _Forked:
    """A child forked by a :class:`Forkserver` running :func:`_forked_child`."""

    def __init__(self, ctx, module, case, out_path, err_path):
        self.proc = ctx.Process(target=_forked_child, args=(module, case, out_path, err_path))
        self.proc.start()
        self.pid = self.proc.pid

    def poll(self) -> Optional[int]:
        if self.proc.is_alive():
            return None
        self.proc.join()
        return self.proc.exitcode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()


def run_in_child(module: str, case: dict, mem_limit_gb: Optional[float],
                 timeout_s: Optional[float], threads: Optional[int] = None,
                 forkserver: Optional[Forkserver] = None, poll_s: float = POLL_S) -> dict:
    """The row of ``case`` measured by ``module.run_case`` in a child process
    of its own (fresh, or forked from ``forkserver``), watched: see the
    module's docstring. A failed case's row is ``dict(status=...,
    peak_rss_gb=...)``."""
    with tempfile.NamedTemporaryFile('w+', prefix='case_out_') as out, \
            tempfile.NamedTemporaryFile('w+', prefix='case_err_') as err:
        child = (forkserver.start if forkserver else _Spawned)(module, case, out, err, threads)
        watchdog = Watchdog(child.pid, mem_limit_gb, timeout_s)
        status = None
        while child.poll() is None:
            status = watchdog.breach()
            if status:
                child.kill()
                break
            time.sleep(poll_s)
        out.seek(0)
        err.seek(0)
        row = None if status else last_json_row(out.read())
        if row is None:
            return dict(status=status or crash_status(child.poll(), err.read()),
                        peak_rss_gb=watchdog.peak_rss_gb)
        return row


def run_cases(module: str, cases: Iterable[dict], mem_limit_gb: Optional[float],
              timeout_s: Optional[float], series: Optional[Callable[[dict], tuple]] = None,
              log: Callable[[str], None] = print,
              forkserver: Optional[Forkserver] = None) -> List[dict]:
    """Each case in order, in its own child (:func:`run_in_child`, with the
    case's ``threads``): rows of the case and what it gave, each logged as a
    JSON line. With ``series``, once a case failed the later cases of its
    ``series(case)`` are skipped (order each series smallest first)."""
    rows, failed = [], set()
    for case in cases:
        key = series(case) if series else None
        if key is not None and key in failed:
            rows.append(dict(case, status='skipped (failed at a smaller side)'))
            continue
        row = dict(case, **run_in_child(module, case, mem_limit_gb, timeout_s,
                                        case.get('threads'), forkserver))
        if row['status'] != 'ok' and key is not None:
            failed.add(key)
        rows.append(row)
        log(json.dumps(row))
    return rows


class WorkerError(RuntimeError):
    """A :class:`Worker` that died, or passed a limit and was stopped; the
    message is its status."""


class Worker:
    """A child process that answers requests for as long as it lives: a line
    on its stdin in, one JSON line on its stdout out. ``argv``, ``env`` and
    ``cwd`` start it (e.g. ``python -c`` code that imports another checkout);
    each answer is awaited under a :class:`Watchdog` (``timeout_s`` per
    answer, ``mem_limit_gb``), which keeps the child's peak resident set
    (``peak_rss_gb``)."""

    def __init__(self, argv: Sequence[str], env: Optional[dict] = None,
                 cwd: Optional[str] = None, mem_limit_gb: Optional[float] = None,
                 timeout_s: Optional[float] = None, poll_s: float = POLL_S):
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=cwd)
        self.watchdog = Watchdog(self.proc.pid, mem_limit_gb, timeout_s)
        self.poll_s = poll_s
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # its output ended

    def receive(self) -> dict:
        """The child's next JSON line; :class:`WorkerError` when it ended or
        passed a limit first."""
        self.watchdog.restart()
        while True:
            status = self.watchdog.breach()
            if status:
                self.proc.kill()
                self.proc.wait()
                raise WorkerError(status)
            try:
                line = self.lines.get(timeout=self.poll_s)
            except queue.Empty:
                continue
            if line is None:
                raise WorkerError(f'crashed (exit code {self.proc.wait()})')
            if line.strip():
                return json.loads(line)

    def request(self, line: str) -> dict:
        """Send ``line``, return the answer (:meth:`receive`)."""
        self.proc.stdin.write(line.rstrip('\n') + '\n')
        self.proc.stdin.flush()
        return self.receive()

    @property
    def peak_rss_gb(self) -> float:
        return self.watchdog.peak_rss_gb

    def close(self) -> None:
        """End its input and wait for it to exit."""
        self.proc.stdin.close()
        self.proc.wait()


if __name__ == '__main__':
    main()
