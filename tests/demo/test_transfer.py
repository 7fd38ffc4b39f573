"""The transfer experiment (tools/transfer_experiment.py, demo.transfer): its
table says what the runs measured, and, in the slow test, a smoke run writes
that table from the evaluation logs of every pretraining and fine-tuning run."""
import re

import pytest

from demo.logs import evaluation_metrics
from demo.transfer import STARTS, parse_args, transfer_table
from tests.tool_runner import run_tool


def table_rows(table: str) -> dict:
    """{(task, start): [cells]} of a transfer table."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        rows[cells[0], cells[1]] = cells[2:]
    return rows


def test_table_marks_the_best_start_and_compares_with_scratch():
    results = {'UperNet': {
        'scratch': {'1x': 40.0, '4x': 30.0, 'minutes': 5.0},
        'UFO-pretrained': {'1x': 45.5, '4x': 29.0, 'minutes': 5.2},
        'XCA-pretrained, converted': {'1x': 41.0, '4x': 31.25, 'minutes': 5.1}}}
    rows = table_rows(transfer_table(results, [4]))
    assert rows['UperNet', 'scratch'] == ['40', '30', '5.0', '-']
    assert rows['UperNet', 'UFO-pretrained'] == ['**45.5**', '29', '5.2', '1x yes, 4x no']
    assert rows['UperNet', 'XCA-pretrained, converted'] == ['41', '**31.25**', '5.1',
                                                           '1x yes, 4x yes']


def test_quick_and_bad_arguments():
    args = parse_args(['--quick'])
    assert (args.cls_iters, args.det_iters, args.seg_iters, args.scales) == (4, 3, 3, [2])
    assert [s for s, _ in STARTS] == ['scratch', 'UFO-pretrained', 'XCA-pretrained, converted']
    with pytest.raises(SystemExit):
        parse_args(['--cls-iters', '0'])


@pytest.mark.slow
def test_smoke_run_writes_the_measured_table(tmp_path):
    pytest.importorskip('mmpretrain', reason='the pretraining step needs mmpretrain')
    work, data = tmp_path / 'work', tmp_path / 'data'
    run_tool('transfer_experiment.py', '--quick', '--out', work, '--data-dir', data,
             '--threads', '1', timeout=3000)
    report = (work / 'transfer.md').read_text()
    for attn in ('ufo', 'xca'):
        top1 = evaluation_metrics(work / f'cls_{attn}' / 'test')['accuracy/top1']
        assert re.search(rf'\| {attn.upper()} attention \| {top1:.4g} \|', report)
    assert (work / 'cls_xca' / 'ufo-vit_from-xca.pth').is_file()
    rows = table_rows(report.split('## Fine-tuning')[1].split('\n\n', 1)[1].split('\n\n')[0])
    for run, task, key, scale in (('mask', 'Mask R-CNN', 'coco/bbox_mAP', 1),
                                  ('upernet', 'UperNet', 'mIoU', 1)):
        for short, (start, _) in zip(('scratch', 'ufo', 'xca'), STARTS):
            value = evaluation_metrics(work / f'{run}_{short}' / 'test')[key] * scale
            assert rows[task, start][0].strip('*') == f'{value:.4g}', (task, start)
