"""tools/measure_cp_memory.py: with_cp lowers the peak memory of a training pass."""
import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'measure_cp_memory.py'


@pytest.mark.slow
def test_with_cp_lowers_training_peak_rss(capsys):
    spec = importlib.util.spec_from_file_location('measure_cp_memory', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rows = tool.main(['--arch', 'small_12_p16', '--sizes', '384', '--repeat', '1'])
    plain, cp = sorted(rows, key=lambda r: r['with_cp'])
    assert (plain['with_cp'], cp['with_cp']) == (False, True)
    # activations of 12 blocks are dropped and recomputed: a clearly lower peak
    assert cp['peak_mib'] - cp['base_mib'] < 0.8 * (plain['peak_mib'] - plain['base_mib']), rows
    assert '| 384x384 | True |' in capsys.readouterr().out
