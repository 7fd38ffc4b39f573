"""ufo_mm.analysis.cp_memory (tools/measure_cp_memory.py): with_cp lowers the
peak memory of a training pass."""
import pytest

from ufo_mm.analysis.cp_memory import cp_memory_table, measure_cases


@pytest.mark.slow
def test_with_cp_lowers_training_peak_rss():
    rows = measure_cases('small_12_p16', [384], repeat=1)
    plain, cp = sorted(rows, key=lambda r: r['with_cp'])
    assert (plain['with_cp'], cp['with_cp']) == (False, True)
    # activations of 12 blocks are dropped and recomputed: a clearly lower peak
    assert cp['peak_mib'] - cp['base_mib'] < 0.8 * (plain['peak_mib'] - plain['base_mib']), rows
    assert '| 384x384 | True |' in cp_memory_table(rows, 'peak RSS (MiB)')


def test_table_has_one_row_per_case():
    rows = [dict(size=64, with_cp=w, peak_mib=300.0, base_mib=200.0, seconds=0.5)
            for w in (False, True)]
    table = cp_memory_table(rows, 'peak RSS (MiB)').splitlines()
    assert table[0] == '| input | with_cp | peak RSS (MiB) | train part (MiB) | s / pass |'
    assert table[2:] == ['| 64x64 | False | 300 | 100 | 0.500 |',
                         '| 64x64 | True | 300 | 100 | 0.500 |']
