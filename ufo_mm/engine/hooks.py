"""Hooks the demo uses on top of mmengine's."""
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class TimeEstimateHook(Hook):
    """Log, once, how long the whole training will take, measured on the first
    iterations (after ``skip`` warm-up iterations, over ``measure`` more), so a
    user knows early whether to wait or shrink the run.

    Args:
        skip: iterations ignored (allocation, first-call overheads).
        measure: iterations timed for the estimate.
    """

    priority = 'VERY_LOW'

    def __init__(self, skip: int = 2, measure: int = 5):
        self.skip = skip
        self.measure = measure
        self._start = None
        self.estimate_s = None

    def before_train(self, runner):
        # Short runs still get an estimate: shrink the warm-up and the window.
        self._skip = min(self.skip, max(0, runner.max_iters - 2))
        self._measure = max(1, min(self.measure, runner.max_iters - self._skip - 1))
        if self._skip == 0:
            self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        done = runner.iter + 1
        if done == self._skip:
            self._start = time.perf_counter()
        elif self._start is not None and done == self._skip + self._measure:
            per_iter = (time.perf_counter() - self._start) / self._measure
            self.estimate_s = per_iter * runner.max_iters
            remaining = per_iter * (runner.max_iters - done)
            runner.logger.info(
                f'Time estimate: {per_iter:.2f} s/iter x {runner.max_iters} iterations = '
                f'{self.estimate_s / 60:.1f} min of training '
                f'({remaining / 60:.1f} min left), plus evaluation')
            self._start = None
