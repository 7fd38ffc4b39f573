"""Tests for ufo_mm.safe_load: weights-only checkpoint loading and resume."""
import argparse
import copy
import io
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner import checkpoint as mmengine_checkpoint
from torch.utils.data import Dataset

from ufo_mm.safe_load import (CheckpointError, UnsafeCheckpointError,
                              install_mmengine_safe_loader,
                              load_from_local_safe, safe_torch_load)


@pytest.fixture(autouse=True)
def safe_loader():
    # ufo_mm/__init__.py installs it on import; install explicitly so these
    # tests do not depend on that line.
    install_mmengine_safe_loader()


# ---------------------------------------------------------------- toy runner
class ToyModel(BaseModel):
    """Linear(2, 4) -> ReLU -> Linear(4, 1); inputs (B, 2), targets (B,)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))

    def forward(self, inputs, targets, mode='tensor'):
        out = self.net(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return out


class ToyDataset(Dataset):
    metainfo = dict(classes=('toy', ))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), i / 8), targets=torch.tensor(i / 8))


class RecordStartHook(Hook):
    """Records the iteration and weights the loop starts from (after resume)."""

    def before_train(self, runner):
        self.start_iter = runner.iter
        self.start_state = copy.deepcopy(runner.model.state_dict())


def make_runner(work_dir, max_iters, **kwargs):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        # Unique names: mmengine keys its global logger/visualizer on them.
        experiment_name=f'toy_{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory):
    """iter_2.pth written by a real mmengine training run."""
    work_dir = tmp_path_factory.mktemp('train')
    make_runner(work_dir, max_iters=2).train()
    return str(work_dir / 'iter_2.pth')


# --------------------------------------------------------------------- tests
def test_bare_torch_load_refuses_training_checkpoint(training_checkpoint):
    # The problem being fixed: torch >= 2.6 defaults to weights_only=True.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(training_checkpoint)


def test_runner_resumes_under_weights_only(training_checkpoint, tmp_path):
    saved = safe_torch_load(training_checkpoint)
    assert isinstance(saved['message_hub']['log_scalars']['train/loss'],
                      HistoryBuffer)
    record = RecordStartHook()
    runner = make_runner(
        tmp_path,
        max_iters=4,
        load_from=training_checkpoint,
        resume=True,
        custom_hooks=[record])
    runner.train()

    assert record.start_iter == 2
    for key, value in saved['state_dict'].items():
        torch.testing.assert_close(record.start_state[key], value)
    assert runner.iter == 4
    assert safe_torch_load(tmp_path / 'iter_4.pth')['meta']['iter'] == 4


def test_resume_fails_without_safe_loader(training_checkpoint, tmp_path,
                                          monkeypatch):
    # Proves the resume test above exercises the installed loader.
    monkeypatch.setitem(mmengine_checkpoint.CheckpointLoader._schemes, '',
                        mmengine_checkpoint.load_from_local)
    runner = make_runner(
        tmp_path, max_iters=4, load_from=training_checkpoint, resume=True)
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        runner.train()


class RunsCode:
    """Pickles as a call of ``func(*args)``, as a malicious checkpoint would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('func, name', [(os.system, os.system.__module__ +
                                         '.system'), (eval, 'builtins.eval')])
def test_code_execution_is_refused(tmp_path, func, name):
    marker = tmp_path / 'pwned'
    if func is os.system:
        payload = RunsCode(os.system, f'echo pwned > {marker}')
    else:
        payload = RunsCode(eval, f"open({str(marker)!r}, 'w').write('x')")
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': payload}, path)

    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(path)
    message = str(info.value)
    assert str(path) in message and name in message
    assert 'refused for safety' in message
    assert info.value.refused_global == name
    assert not marker.exists()


def test_getattr_is_narrowed_to_history_buffer_methods(tmp_path):
    # Allowed: how HistoryBuffer pickles its statistics methods.
    ok = tmp_path / 'ok.pth'
    torch.save({'f': RunsCode(getattr, HistoryBuffer, 'mean')}, ok)
    assert safe_torch_load(ok)['f'] is HistoryBuffer.mean
    # Refused: reaching further through an allowed object.
    evil = tmp_path / 'evil.pth'
    torch.save({'f': RunsCode(getattr, HistoryBuffer, '__init__')}, evil)
    with pytest.raises(UnsafeCheckpointError, match='builtins.getattr'):
        safe_torch_load(evil)


@pytest.mark.parametrize('zip_format', [True, False])
def test_truncated_checkpoint(tmp_path, zip_format):
    path = tmp_path / 'cut.pth'
    torch.save({'w': torch.ones(256)},
               path,
               _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt') as info:
        safe_torch_load(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_torch_load(path)


def test_xcit_style_checkpoint_with_namespace(tmp_path):
    path = tmp_path / 'xcit.pth'
    args = argparse.Namespace(model='xcit_tiny_12_p16', lr=5e-4, drop=0.0)
    torch.save({'model': {'w': torch.arange(4.0)}, 'args': args}, path)
    loaded = safe_torch_load(path)
    assert loaded['args'] == args
    torch.testing.assert_close(loaded['model']['w'], torch.arange(4.0))


def test_numpy1_checkpoint_names(tmp_path):
    # numpy 1.x wrote numpy.core.multiarray; legacy format keeps the pickle
    # as one stream, so the module name can be rewritten in place.
    buf = io.BytesIO()
    torch.save({'a': np.arange(3.0), 's': np.float64(2.5)},
               buf,
               _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b'numpy._core.multiarray\n',
                                  b'numpy.core.multiarray\n')
    assert b'numpy.core.multiarray\n' in data
    path = tmp_path / 'np1.pth'
    path.write_bytes(data)
    loaded = safe_torch_load(path)
    np.testing.assert_array_equal(loaded['a'], np.arange(3.0))
    assert loaded['s'] == 2.5


def test_empty_history_buffer(tmp_path):
    # Empty arrays pickle their data as bytes(): why builtins.bytes is allowed.
    path = tmp_path / 'hub.pth'
    torch.save({'log_scalars': {'train/loss': HistoryBuffer()}}, path)
    buffer = safe_torch_load(path)['log_scalars']['train/loss']
    assert len(buffer.data[0]) == 0
    buffer.update(1.5)
    assert buffer.mean() == 1.5


def test_object_dtype_is_refused(tmp_path):
    # Only numeric dtype classes are allowed: no object arrays.
    path = tmp_path / 'objects.pth'
    torch.save({'a': np.array([None, 'x'], dtype=object)}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(path)
    assert info.value.refused_global == 'numpy.dtypes.ObjectDType'


def test_allow_list_is_scoped_to_the_load(training_checkpoint, tmp_path):
    before = torch.serialization.get_safe_globals()
    safe_torch_load(training_checkpoint)
    evil = tmp_path / 'evil.pth'
    torch.save(RunsCode(eval, '1'), evil)
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(evil)
    after = torch.serialization.get_safe_globals()
    assert after == before
    assert not any(
        isinstance(g, tuple) and g[1] == 'builtins.getattr' or g is getattr
        for g in after)


def test_user_allowed_globals_survive(training_checkpoint):
    # Leaving a safe_globals scope removes what it added; entries the user
    # allowed process-wide must not be among them.
    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([HistoryBuffer])
    try:
        safe_torch_load(training_checkpoint)
        assert HistoryBuffer in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_install_is_idempotent_and_expands_user(tmp_path, monkeypatch):
    loader = mmengine_checkpoint.CheckpointLoader
    install_mmengine_safe_loader()
    schemes = dict(loader._schemes)
    install_mmengine_safe_loader()
    assert loader._schemes == schemes
    assert loader._schemes[''] is load_from_local_safe
    assert loader._schemes['http://'] is mmengine_checkpoint.load_from_http

    monkeypatch.setenv('HOME', str(tmp_path))
    torch.save({'args': argparse.Namespace(a=1)}, tmp_path / 'home.pth')
    loaded = loader.load_checkpoint('~/home.pth', map_location='cpu')
    assert loaded['args'].a == 1
