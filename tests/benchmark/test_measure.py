"""ufo_mm.benchmark.measure: one case in this process (a tiny input)."""
from ufo_mm.benchmark.measure import capped_repeats, run_case, time_stats


def test_time_stats_and_capped_repeats():
    assert time_stats([0.3, 0.1, 0.2]) == dict(time_ms_median=200., time_ms_min=100., repeats=3)
    assert capped_repeats(dict(repeats=5, max_timed_s=1.), 0.3) == 3
    assert capped_repeats(dict(repeats=5, max_timed_s=1.), 10.) == 1
    assert capped_repeats(dict(repeats=5), 10.) == 5


def test_run_case_measures_time_memory_and_flops():
    res = run_case(dict(model='ufo_t12', height=64, width=64, precision='fp32', threads=1,
                        warmup=1, repeats=2, flops=True))
    assert res['status'] == 'ok' and res['repeats'] == 2
    assert res['time_ms_median'] >= res['time_ms_min'] > 0
    assert res['peak_rss_mb'] >= res['base_rss_mb'] > 50 and res['gflops'] > 0
