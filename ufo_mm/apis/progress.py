"""The progress bar the tools draw while a large image is processed."""


class ProgressBarCallback:
    """A ``progress(done, total)`` callable drawing mmengine's ``ProgressBar``
    on ``file`` (stderr by default, so that stdout stays for results). The bar
    starts at the first call, when ``total`` is known; a line break ends it
    once ``done`` reaches ``total``."""

    def __init__(self, file=None):
        import sys
        self.file = file if file is not None else sys.stderr
        self.bar = None

    def __call__(self, done: int, total: int):
        from mmengine.utils import ProgressBar
        if self.bar is None:
            self.bar = ProgressBar(total, file=self.file)
        if done > self.bar.completed:
            self.bar.update(done - self.bar.completed)
            if done >= total:
                self.file.write('\n')
                self.file.flush()
