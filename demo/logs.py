"""Read what mmengine's Runner wrote into a work dir: training scalars and the
metrics of a test run (the evaluation log)."""
import json
from pathlib import Path
from typing import Dict, List

# Bookkeeping that mmengine logs next to the metrics.
NOT_METRICS = {'step', 'iter', 'epoch', 'time', 'data_time', 'memory', 'lr'}


def _latest_run(work_dir: Path) -> Path:
    """The newest ``<timestamp>/`` folder mmengine made in ``work_dir``."""
    runs = sorted(p for p in Path(work_dir).iterdir() if p.is_dir() and p.name[:8].isdigit())
    if not runs:
        raise FileNotFoundError(f'no mmengine run folder (<timestamp>/) in {work_dir}')
    return runs[-1]


def training_scalars(work_dir) -> List[dict]:
    """Every record of ``vis_data/scalars.json`` of the latest run, in order."""
    path = _latest_run(Path(work_dir)) / 'vis_data' / 'scalars.json'
    if not path.is_file():
        raise FileNotFoundError(f'no training log {path}')
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_curve(work_dir) -> Dict[str, List[float]]:
    """{'iter': [...], 'loss': [...]} from the training records that carry a loss."""
    rows = [r for r in training_scalars(work_dir) if 'loss' in r]
    return {'iter': [r.get('iter', r.get('step')) for r in rows],
            'loss': [r['loss'] for r in rows]}


def evaluation_metrics(work_dir) -> Dict[str, float]:
    """Metrics of the latest test run: mmengine's LoggerHook dumps them to
    ``<timestamp>/<timestamp>.json`` after the test epoch."""
    run = _latest_run(Path(work_dir))
    path = run / f'{run.name}.json'
    if not path.is_file():
        raise FileNotFoundError(f'no test metrics log {path}')
    record = json.loads(path.read_text())
    return {k: v for k, v in record.items()
            if isinstance(v, (int, float)) and k not in NOT_METRICS}
