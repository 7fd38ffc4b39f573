"""The demo's report: a loss-curve plot and a markdown page under work_dirs/demo/."""
import os.path as osp
from pathlib import Path
from typing import Dict, List, Sequence


def plot_loss_curves(curves: Dict[str, Dict[str, List[float]]], out_png) -> Path:
    """One panel per run: training loss against iteration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items()):
        ax.plot(curve['iter'], curve['loss'])
        ax.set_title(f'{name}: training loss')
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss')
        ax.set_yscale('log')
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(v):
        return f'{v:.4g}' if isinstance(v, float) else str(v)
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(fmt(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def write_report(path, title: str, sections: Sequence[tuple]) -> Path:
    """``sections``: (heading, body) pairs; body is markdown text, or a list of
    image paths shown as pictures (written relative to the report)."""
    path = Path(path)
    out = [f'# {title}', '']
    for heading, body in sections:
        out += [f'## {heading}', '']
        if isinstance(body, (list, tuple)):
            out += [f'![{Path(p).name}]({osp.relpath(p, path.parent)})' for p in body]
        else:
            out.append(body)
        out.append('')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(out))
    return path
