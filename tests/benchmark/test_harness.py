"""ufo_mm.benchmark.harness: a case in a child process of its own (fresh or
forked from a server), its row read back, each way of failing its status;
cases in order with a series skipped after a failure; a long-lived worker
answering JSON lines under the same watchdog."""
import os
import sys

import pytest

from ufo_mm.benchmark import harness

CASES = 'tests.benchmark.harness_cases'


def test_a_case_in_a_fresh_child_gives_its_row():
    row = harness.run_in_child(CASES, dict(do='ok', n=10), mem_limit_gb=8, timeout_s=300,
                               threads=1)
    assert row['status'] == 'ok' and row['total'] == 45
    assert row['pid'] != os.getpid()
    assert 0 < row['ready_rss_gb'] <= row['peak_rss_gb'] < 8
    assert row['seconds'] >= 0 and row['cpu_seconds'] >= 0


def test_an_exception_is_the_status():
    row = harness.run_in_child(CASES, dict(do='raise'), mem_limit_gb=8, timeout_s=300)
    assert row == dict(status='error: ValueError: no such model')
    row = harness.run_in_child('tests.benchmark.no_such_module', {}, 8, 300)
    assert row['status'].startswith('error: ModuleNotFoundError')


@pytest.mark.parametrize('case, limits, status', [
    (dict(do='sleep', seconds=60), (8, 1), 'timeout (> 1 s)'),
    # a fresh child holds more than 50 MB once it has imported the package
    (dict(do='sleep', seconds=60), (0.05, 300), 'out of memory (> 0.05 GiB)'),
    (dict(do='exit', code=3), (8, 300), 'crashed (exit code 3)'),
    (dict(do='oom-killed'), (8, 300), 'out of memory'),
])
def test_each_way_of_failing_is_the_status(case, limits, status):
    row = harness.run_in_child(CASES, case, *limits, poll_s=0.05)
    assert row['status'] == status and set(row) == {'status', 'peak_rss_gb'}
    assert row['peak_rss_gb'] > 0


def test_a_case_forked_from_a_server_gives_its_row():
    server = harness.Forkserver([CASES])
    rows = [harness.run_in_child(CASES, dict(do='ok', n=n), 8, 300, forkserver=server)
            for n in (3, 4)]
    assert [r['total'] for r in rows] == [3, 6] and rows[0]['pid'] != rows[1]['pid']
    row = harness.run_in_child(CASES, dict(do='sleep', seconds=60), 8, 1, forkserver=server)
    assert row['status'] == 'timeout (> 1 s)'


def test_cases_in_order_skip_a_series_after_its_failure(monkeypatch):
    def fake(module, case, mem_limit_gb, timeout_s, threads, forkserver):
        return dict(status='out of memory' if case['side'] == 2 and case['kind'] == 'a'
                    else 'ok', seconds=1.0)
    monkeypatch.setattr(harness, 'run_in_child', fake)
    cases = [dict(kind=k, side=s) for k in 'ab' for s in (1, 2, 3)]
    logged = []
    rows = harness.run_cases(CASES, cases, 8, 60, series=lambda c: c['kind'],
                             log=logged.append)
    assert [r['status'] for r in rows] == ['ok', 'out of memory',
                                           'skipped (failed at a smaller side)', 'ok', 'ok', 'ok']
    assert rows[0] == dict(kind='a', side=1, status='ok', seconds=1.0)
    assert len(logged) == 5  # the skipped case did not run


ECHO = r'''
import json, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    if line.strip() == "hang":
        time.sleep(60)
    if line.strip() == "quit":
        sys.exit(5)
    print(json.dumps({"echo": line.strip()}), flush=True)
'''


def test_a_worker_answers_until_it_fails():
    worker = harness.Worker([sys.executable, '-c', ECHO], timeout_s=2, poll_s=0.05)
    assert worker.receive() == {'ready': True}
    assert worker.request('a') == {'echo': 'a'} and worker.request('b') == {'echo': 'b'}
    assert worker.peak_rss_gb > 0
    with pytest.raises(harness.WorkerError, match=r'timeout \(> 2 s\)'):
        worker.request('hang')
    worker = harness.Worker([sys.executable, '-c', ECHO])
    worker.receive()
    with pytest.raises(harness.WorkerError, match=r'crashed \(exit code 5\)'):
        worker.request('quit')
