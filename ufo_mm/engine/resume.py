"""Exact resume: carry every rank's random number generator states in checkpoints.

mmengine's ``Runner.resume`` restores weights, optimizer, schedulers and the
iteration count, then re-seeds the RNGs with the run's seed, and the
iteration-based loop replays the data loader up to the resumed iteration. Data
order and augmentations therefore come out as in an uninterrupted run, but any
randomness drawn in the main process *during* training (dropout, stochastic
depth, mmdet's RoI samplers) starts from the seed again instead of where the
interrupted run was, so a resumed run drifts away from an uninterrupted one.

:class:`RNGStateHook` stores the Python, numpy, torch (and CUDA) generator
states of every rank in each checkpoint (``checkpoint['rng_states']``, one
entry per rank, gathered before each save) and puts them back on resume right
before the first resumed batch is fetched, i.e. after mmengine's data loader
replay. A resumed run then reproduces the uninterrupted one bit for bit (on the
same hardware with ``randomness=dict(seed=..., deterministic=True)``).

The states are plain tensors, numpy arrays, ints and strings, all of which the
weights-only safe loader (``ufo_mm.safe_load``) accepts.
"""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

__all__ = ['RNGStateHook', 'add_rng_state_hook', 'get_rng_states', 'set_rng_states']


def get_rng_states() -> dict:
    """This process's generator states (python, numpy, torch, cuda)."""
    states = dict(python=random.getstate(), numpy=np.random.get_state(),
                  torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Inverse of :func:`get_rng_states`."""
    random.setstate(_as_tuples(states['python']))
    np.random.set_state(_as_tuples(states['numpy']))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def _as_tuples(obj):
    """random/np.random want nested tuples; a checkpoint round trip keeps them,
    but configs dumped to JSON-like forms turn them into lists."""
    if isinstance(obj, list):
        return tuple(_as_tuples(o) for o in obj)
    if isinstance(obj, tuple):
        return tuple(_as_tuples(o) for o in obj)
    return obj


class _RestoreBeforeFetch:
    """Wraps an iteration-based loop's data iterator: lets the resume replay
    (``skip`` batches) through untouched, then restores the RNG states just
    before the first batch that is trained on, and unwraps itself."""

    def __init__(self, loop, skip: int, states: dict):
        self._loop = loop
        self._inner = loop.dataloader_iterator
        self._skip = skip
        self._states = states

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip > 0:
            self._skip -= 1
            return next(self._inner)
        set_rng_states(self._states)
        self._loop.dataloader_iterator = self._inner
        return next(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save every rank's RNG states in checkpoints and restore them on resume.

    Add it with ``custom_hooks = [dict(type='RNGStateHook')]``;
    ``tools/train.py`` adds it to every config by default.

    A checkpoint without states (written without this hook) or one saved by a
    different number of processes resumes as plain mmengine does (re-seeded),
    with a warning.
    """

    # Before CheckpointHook (VERY_LOW), which saves in the same after_* calls.
    priority = 'LOW'

    def __init__(self):
        self._loaded: Optional[List[dict]] = None
        self._gathered: Optional[List[dict]] = None

    def _gather(self) -> None:
        # Runner.save_checkpoint (and so before_save_checkpoint) runs on rank 0
        # only, so the other ranks' states are collected here, on every rank,
        # right before CheckpointHook may save: one small all_gather_object
        # (about 10 KB per rank) per iteration, only when distributed.
        if get_world_size() > 1:
            self._gathered = all_gather_object(get_rng_states())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._gather()

    def after_train_epoch(self, runner) -> None:
        self._gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = [get_rng_states()]
        if get_world_size() > 1:
            if self._gathered is None:
                return  # saved outside training: no states of the other ranks
            states += self._gathered[1:]
        checkpoint['rng_states'] = states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get('rng_states')

    def before_train(self, runner) -> None:
        loaded, self._loaded = self._loaded, None
        if not getattr(runner, '_resume', False) or runner.iter == 0 and runner.epoch == 0:
            return  # a fresh run (load_from only loads weights): nothing to restore
        if loaded is None:
            print_log('resumed checkpoint has no RNG states (saved without RNGStateHook): '
                      'random draws after resume (dropout, drop path) are re-seeded, so the '
                      'run will not match an uninterrupted one exactly',
                      logger='current', level=30)
            return
        if len(loaded) != get_world_size():
            print_log(f'checkpoint has RNG states of {len(loaded)} processes, this run has '
                      f'{get_world_size()}: RNG states not restored', logger='current', level=30)
            return
        states = loaded[get_rank()]
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):
            # Iteration-based: mmengine replays `iter` batches first; restore after that.
            loop.dataloader_iterator = _RestoreBeforeFetch(loop, runner.iter, states)
        else:
            # Epoch-based: resumes at an epoch boundary, nothing is replayed.
            set_rng_states(states)


def add_rng_state_hook(cfg) -> bool:
    """Append ``RNGStateHook`` to ``cfg.custom_hooks`` unless it is there; True if added."""
    hooks = list(cfg.get('custom_hooks') or [])
    if any(isinstance(h, RNGStateHook)
           or isinstance(h, dict) and h.get('type') in ('RNGStateHook', RNGStateHook)
           for h in hooks):
        return False
    hooks.append(dict(type='RNGStateHook'))
    cfg.custom_hooks = hooks
    return True
