"""ufo_mm.apis.progress: the tools' progress bar."""
import io

from ufo_mm.apis.progress import ProgressBarCallback


def test_progress_callback_draws_an_mmengine_bar():
    out = io.StringIO()
    progress = ProgressBarCallback(out)
    for done in (0, 1, 3, 4):
        progress(done, 4)
    text = out.getvalue()
    assert '0/4' in text and '1/4' in text and '3/4' in text and '4/4' in text
    assert text.endswith('\n') and text.count('\n') == 1
