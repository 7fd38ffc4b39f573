"""Resume after a crash: a training run killed with SIGKILL and restarted with
``tools/train.py --resume`` ends with exactly the weights of an uninterrupted
run; broken or unsafe checkpoints are refused with an error naming the file.

The model has dropout (the decode head's, p=0.1), so an exact match needs the
RNG states that ``RNGStateHook`` (added by tools/train.py) stores in every
checkpoint, on top of mmengine's weights/optimizer/scheduler/data-order resume.
"""
import os
import pickle
import re
import signal
import subprocess
import time

import pytest
import torch

from tests.tiny_seg_training import (assert_state_dicts_equal, checkpoints, load_state_dict,
                                     logged_scalars, make_data, write_config)
from tests.tool_runner import REPO, run_tool, tool_command, tool_env
from ufo_mm.engine.resume import RNGStateHook, add_rng_state_hook, get_rng_states, set_rng_states
from ufo_mm.safe_load import safe_torch_load

MAX_ITERS = 30
INTERVAL = 5


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('resume')
    data_root = make_data(root / 'data')
    config = write_config(root / 'tiny_upernet.py', data_root, max_iters=MAX_ITERS,
                          ckpt_interval=INTERVAL, dropout=0.1)
    full = root / 'uninterrupted'
    run_tool('train.py', config, '--work-dir', full)
    return root, config, full


def test_killed_run_resumes_to_identical_weights(setup):
    root, config, full = setup
    work_dir = root / 'killed'
    proc = subprocess.Popen(tool_command('train.py', config, '--work-dir', work_dir),
                            env=tool_env(), cwd=str(REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # mmengine writes last_checkpoint once a checkpoint file is complete.
        deadline = time.time() + 240
        while not (work_dir / 'last_checkpoint').exists():
            assert proc.poll() is None, 'training ended before writing a checkpoint'
            assert time.time() < deadline, 'no checkpoint within 240 s'
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert f'iter_{MAX_ITERS}.pth' not in checkpoints(work_dir), 'killed too late to test'

    resumed = run_tool('train.py', config, '--work-dir', work_dir, '--resume')
    log = resumed.stdout + resumed.stderr
    start = int(re.search(r'resumed epoch: \d+, iter: (\d+)', log).group(1))
    assert INTERVAL <= start < MAX_ITERS and start % INTERVAL == 0

    final = safe_torch_load(work_dir / f'iter_{MAX_ITERS}.pth')
    reference = safe_torch_load(full / f'iter_{MAX_ITERS}.pth')
    assert final['meta']['iter'] == reference['meta']['iter'] == MAX_ITERS
    assert_state_dicts_equal(final['state_dict'], reference['state_dict'])  # BN buffers too
    # AdamW moments and step counts as well
    for a, b in zip(final['optimizer']['state'].values(),
                    reference['optimizer']['state'].values()):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    # The resumed iterations saw the same data and dropout masks: same losses.
    losses = {r['step']: r['loss'] for r in logged_scalars(work_dir) if 'loss' in r}
    ref_losses = {r['step']: r['loss'] for r in logged_scalars(full) if 'loss' in r}
    assert set(losses) == set(range(start + 1, MAX_ITERS + 1))
    assert all(losses[s] == ref_losses[s] for s in losses)


def test_checkpoints_carry_rng_states_the_safe_loader_accepts(setup):
    _, _, full = setup
    ckpt = safe_torch_load(full / f'iter_{INTERVAL}.pth')
    (states,) = ckpt['rng_states']  # one process
    assert set(states) >= {'python', 'numpy', 'torch'}
    before = get_rng_states()
    try:
        set_rng_states(states)
        first = torch.rand(3)
        set_rng_states(states)
        assert torch.equal(torch.rand(3), first)
    finally:
        set_rng_states(before)


def test_add_rng_state_hook_is_idempotent():
    from mmengine.config import Config
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')]))
    assert add_rng_state_hook(cfg)
    assert not add_rng_state_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['EMAHook', 'RNGStateHook']
    cfg = Config(dict(custom_hooks=[RNGStateHook()]))
    assert not add_rng_state_hook(cfg)


class _RunsShellCommand:
    """Unpickling this calls os.system(command): what a malicious file does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _train_error(config, work_dir, checkpoint) -> str:
    proc = run_tool('train.py', config, '--work-dir', work_dir, '--resume', checkpoint,
                    check=False, timeout=240)
    assert proc.returncode != 0
    return proc.stderr


def test_resume_refuses_checkpoint_that_runs_code(setup, tmp_path):
    root, config, full = setup
    marker = tmp_path / 'code_ran'
    ckpt = safe_torch_load(full / f'iter_{INTERVAL}.pth')
    ckpt['meta']['payload'] = _RunsShellCommand(f'touch {marker}')
    evil = tmp_path / 'evil.pth'
    torch.save(ckpt, evil)
    assert b'system' in evil.read_bytes()  # the call is really in the file

    err = _train_error(config, tmp_path / 'work', evil)
    assert not marker.exists(), 'the checkpoint ran code while loading'
    last = err.strip().splitlines()[-1]
    assert 'UnsafeCheckpointError' in last and str(evil) in last
    assert "'posix.system'" in last or "'nt.system'" in last
    assert 'weights_only=False' in last  # says it never falls back to unsafe loading


def test_resume_truncated_checkpoint_names_file(setup, tmp_path):
    root, config, full = setup
    data = (full / f'iter_{INTERVAL}.pth').read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 2])

    err = _train_error(config, tmp_path / 'work', truncated)
    last = err.strip().splitlines()[-1]
    assert 'CheckpointError' in last and str(truncated) in last
    assert 'truncated or corrupt' in last
    assert pickle.UnpicklingError.__name__ not in last  # not mistaken for an unsafe file


EPOCH_BASED = '''
_base_ = {base!r}
train_dataloader = dict(sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=8, val_interval=100)
param_scheduler = [dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=True, begin=0, end=8)]
default_hooks = dict(checkpoint=dict(by_epoch=True, interval=2),
                     logger=dict(log_metric_by_epoch=True))
log_processor = dict(by_epoch=True)
'''


@pytest.mark.slow
def test_epoch_based_killed_run_resumes_to_identical_weights(setup, tmp_path):
    """mmdet-style epoch loop: resume starts at an epoch boundary."""
    _, base, _ = setup
    config = tmp_path / 'epoch_based.py'
    config.write_text(EPOCH_BASED.format(base=str(base)))
    run_tool('train.py', config, '--work-dir', tmp_path / 'full')
    work_dir = tmp_path / 'killed'
    proc = subprocess.Popen(tool_command('train.py', config, '--work-dir', work_dir),
                            env=tool_env(), cwd=str(REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (work_dir / 'last_checkpoint').exists():
            assert proc.poll() is None, 'training ended before writing a checkpoint'
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (work_dir / 'epoch_8.pth').exists()
    run_tool('train.py', config, '--work-dir', work_dir, '--resume')
    assert_state_dicts_equal(load_state_dict(work_dir / 'epoch_8.pth'),
                             load_state_dict(tmp_path / 'full' / 'epoch_8.pth'))
