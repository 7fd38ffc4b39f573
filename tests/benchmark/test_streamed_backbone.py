"""The streamed-backbone benchmark compares like with like: the same kept
tensors from each route, ratios against the first case of the same run."""
import importlib.util
import json
from pathlib import Path

import pytest

from ufo_mm.benchmark import streamed_backbone


def test_routes_agree_and_ratios_are_against_the_first_case():
    results = streamed_backbone.run('tiny_12_p16', sides=[96], rounds=1,
                                    cases=('whole', 'streamed', 'streamed-reference'))
    rows = results[96]
    assert set(rows) == {'whole', 'streamed', 'streamed-reference'}
    assert rows['whole']['ratio_wall'] == 1.0 and rows['whole']['max_abs_diff'] == 0.0
    for case in ('streamed', 'streamed-reference'):
        r = rows[case]
        assert r['ratio_wall'] == pytest.approx(r['wall_s'] / rows['whole']['wall_s'])
        assert r['max_abs_diff'] < 1e-3
    table = streamed_backbone.report(results)
    assert len(table) == 2 + 3 and table[2].startswith('| 96 | whole |')


def test_command_line_writes_json_and_markdown(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'benchmark_streamed_backbone',
        Path(__file__).parents[2] / 'tools' / 'benchmark_streamed_backbone.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main
    out = tmp_path / 'bench' / 'streamed.json'
    main(['--arch', 'tiny_12_p16', '--sides', '64', '--rounds', '1', '--threads', '1',
          '--out', str(out)])
    data = json.loads(out.read_text())
    assert data['arch'] == 'tiny_12_p16' and set(data['results']['64']) == {'whole', 'streamed'}
    assert '| 64 | streamed |' in out.with_suffix('.md').read_text()
