"""ufo_mm.benchmark.report: ratios to UFO-ViT-S12/16, the CSV and the tables."""
import csv

import pytest

from ufo_mm.benchmark.report import CSV_COLUMNS, add_ratios, markdown_tables, write_csv


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
