"""ufo_mm.benchmark.report: ratios to UFO-ViT-S12/16, the CSV and the tables."""
import csv

import pytest

from ufo_mm.benchmark.report import (CSV_COLUMNS, add_ratios, markdown_tables, summary,
                                     write_csv)


def row(model, label, H, time_ms, mem, status='ok'):
    return dict(model=model, label=label, kind='backbone', precision='fp32', height=H,
                width=H, status=status, time_ms_median=time_ms if status == 'ok' else None,
                fwd_mem_mb=mem if status == 'ok' else None, peak_rss_mb=500.)


@pytest.fixture
def rows():
    ufo, vit = 'UFO-ViT-S12/16', 'ViT-S/16 (softmax)'
    rows = [row('ufo_s12', ufo, 64, 10., 20.), row('vit_s', vit, 64, 30., 10.),
            row('ufo_s12', ufo, 256, 40., 80.),
            row('vit_s', vit, 256, 0, 0, status='skipped (OOM risk)')]
    add_ratios(rows)
    return rows


def test_ratios_are_relative_to_ufo_s12(rows):
    assert rows[0]['time_ratio_vs_ufo_s12'] == 1.0
    assert rows[1]['time_ratio_vs_ufo_s12'] == 3.0 and rows[1]['mem_ratio_vs_ufo_s12'] == 0.5
    assert rows[3]['time_ratio_vs_ufo_s12'] is None


def test_csv_columns(rows, tmp_path):
    write_csv(rows, tmp_path / 'b.csv')
    with open(tmp_path / 'b.csv') as f:
        reader = csv.DictReader(f)
        written = list(reader)
    assert reader.fieldnames == CSV_COLUMNS and len(written) == 4
    assert written[1]['time_ratio_vs_ufo_s12'] == '3.0' and written[3]['time_ms_median'] == ''


def test_markdown_tables(rows):
    tables = markdown_tables(rows)
    assert '| model | 64x64 | 256x256 |' in tables
    assert '| ViT-S/16 (softmax) | 30 (x3.00) | skipped (OOM risk) |' in tables
    assert '| UFO-ViT-S12/16 | 10 | 40 |' in tables


def variant(base, **kw):
    return dict(base, **kw)


@pytest.fixture
def more_rows(rows):
    """The inference rows, a compiled UFO-ViT-S12/16 and training steps."""
    ufo = rows[0]
    compiled = variant(ufo, label='UFO-ViT-S12/16 (compiled)', compiled=True, time_ms_median=5.,
                       compile_s=42., fwd_mem_mb=None, peak_rss_mb=None)
    train = [variant(ufo, mode='train', batch=2, with_cp=cp, label=label, model=model,
                     time_ms_median=t, fwd_mem_mb=mem)
             for model, label, cp, t, mem in (
                 ('ufo_s12', 'UFO-ViT-S12/16', False, 100., 400.),
                 ('ufo_s12', 'UFO-ViT-S12/16 +cp', True, 130., 100.),
                 ('swin_t', 'Swin-T', False, 200., 800.),
                 ('swin_t', 'Swin-T +cp', True, 260., 200.))]
    out = rows + [compiled] + train
    add_ratios(out)
    return out


def test_compiled_and_train_rows_compare_with_eager_ufo_at_the_same_case(more_rows):
    compiled, ufo, ufo_cp, swin, swin_cp = more_rows[4:]
    assert compiled['time_ratio_vs_ufo_s12'] == 0.5 and compiled['mem_ratio_vs_ufo_s12'] is None
    assert ufo['time_ratio_vs_ufo_s12'] == ufo_cp['time_ratio_vs_ufo_s12'] == 1.0
    assert swin['time_ratio_vs_ufo_s12'] == 2.0 and swin_cp['time_ratio_vs_ufo_s12'] == 2.0
    assert swin_cp['mem_ratio_vs_ufo_s12'] == 2.0


def test_csv_marks_compiled_and_train_rows(more_rows, tmp_path):
    assert {'mode', 'batch', 'with_cp', 'compiled', 'compile_s'} <= set(CSV_COLUMNS)
    write_csv(more_rows, tmp_path / 'b.csv')
    with open(tmp_path / 'b.csv') as f:
        written = list(csv.DictReader(f))
    assert written[4]['compiled'] == 'True' and written[4]['compile_s'] == '42.0'
    assert [r['mode'] for r in written[5:]] == ['train'] * 4
    assert [r['with_cp'] for r in written[5:]] == ['False', 'True'] * 2


def test_markdown_compiled_rows_and_train_table(more_rows):
    tables = markdown_tables(more_rows)
    assert '| UFO-ViT-S12/16 (compiled) | 5 (x0.50) |  |' in tables  # the time, and
    assert '| UFO-ViT-S12/16 (compiled) | - |  |' in tables  # memory not measured
    assert 'torch.compile: first call, s' in tables  # the compile apart
    assert '| UFO-ViT-S12/16 (compiled) | 42.0 |  |' in tables
    assert '**training step of the backbone' in tables
    assert '| Swin-T +cp | 64x64 | 2 | 260 (x2.00) | 200 (x2.00) | 500 | - |' in tables
    assert '| UFO-ViT-S12/16 +cp | 64x64 | 2 | 130 | 100 | 500 | - |' in tables


def test_summary_lines_for_compiled_and_train(more_rows):
    lines = summary(more_rows, {})
    assert any('(compiled) infer fp32 64x64: 5 ms vs eager 10 ms (x0.50); first call '
               '(compile) 42.0 s' in x for x in lines)
    assert 'training step 64x64 batch 2 with_cp: UFO-ViT-S12/16 130 ms, 100 MB; Swin-T ' \
           '260 ms, 200 MB' in lines
