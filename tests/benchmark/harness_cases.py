"""A case module for tests/benchmark/test_harness.py: ``run_case`` does what
the case's ``do`` says, in the child process that runs it."""
import os
import signal
import time

from ufo_mm.benchmark.harness import measure_call


def run_case(case: dict) -> dict:
    do = case['do']
    if do == 'ok':
        total, measured = measure_call(lambda: sum(range(case.get('n', 1000))))
        return dict(status='ok', total=total, pid=os.getpid(), **measured)
    if do == 'raise':
        raise ValueError('no such model')
    if do == 'sleep':
        time.sleep(case['seconds'])
        return dict(status='ok')
    if do == 'exit':
        print('about to go', flush=True)
        os._exit(case['code'])
    if do == 'oom-killed':
        os.kill(os.getpid(), signal.SIGKILL)
    raise KeyError(do)
