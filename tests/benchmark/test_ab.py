"""ufo_mm.benchmark.ab: each worker times its own checkout's backbone, interleaved."""
import textwrap
from pathlib import Path

from ufo_mm.benchmark.ab import CheckoutWorker, compare, report

REPO = Path(__file__).resolve().parents[2]


def fake_tree(root: Path) -> Path:
    """A checkout whose UFOViT sleeps 50 ms per forward."""
    pkg = root / 'ufo_mm' / 'models'
    pkg.mkdir(parents=True)
    (root / 'ufo_mm' / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text(textwrap.dedent('''
        import time
        import torch.nn as nn

        class UFOViT(nn.Module):
            def __init__(self, arch):
                super().__init__()

            def forward(self, x):
                time.sleep(0.05)
                return x
    '''))
    return root


def test_each_checkout_is_timed_with_its_own_code(tmp_path):
    fake = fake_tree(tmp_path / 'fake')
    for tree in (REPO, fake):  # each worker imports ufo_mm from its own tree
        w = CheckoutWorker(str(tree), 'tiny_12_p16', 1)
        assert Path(w.where).resolve().is_relative_to(tree.resolve()), w.where
        w.close()
    times = compare(str(REPO), str(fake), sizes=[64, 96], rounds=3,
                    arch='tiny_12_p16', threads=1)
    assert set(times) == {64, 96}
    for t in times.values():
        assert len(t['a']) == len(t['b']) == 3
        assert all(49 < ms < 500 for ms in t['b'])  # the fake tree's sleep, not the model
    table = report(times, 'real', 'fake')
    assert '| 64x64 |' in table and '| 96x96 |' in table and 'B / A' in table
