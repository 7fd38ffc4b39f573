"""Distributed data-parallel training on CPU: two processes started by
tools/dist_train.sh (torchrun, ``tools/train.py --launcher pytorch``) with
gloo, training a tiny UperNet + UFO-ViT.

Checks what DDP promises: ranks train on different samples yet end with the
same weights (gradients are all-reduced), and only rank 0 writes files. BN,
not SyncBN (SyncBatchNorm needs CUDA), so running statistics stay per rank
and the checkpoint holds rank 0's.
"""
import os
import socket
import subprocess

import pytest
import torch

from tests.tiny_seg_training import checkpoints, load_state_dict, make_data, write_config
from tests.tool_runner import REPO, run_tool, tool_command, tool_env
from ufo_mm.safe_load import safe_torch_load

# Imported by each rank through custom_imports: records what every rank does.
PROBE = '''
import os
import torch
from mmengine.dist import get_rank
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

PROBE_DIR = os.environ['UFO_PROBE_DIR']
_put = LocalBackend.put


def _recording_put(self, obj, filepath):
    # every file mmengine writes through its file backend (checkpoints included)
    with open(os.path.join(PROBE_DIR, f'writes_rank{get_rank()}.txt'), 'a') as f:
        f.write(f'{filepath}\\n')
    return _put(self, obj, filepath)


LocalBackend.put = _recording_put


@HOOKS.register_module()
class RankProbeHook(Hook):
    def _dump(self, runner, name):
        model = getattr(runner.model, 'module', runner.model)
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   os.path.join(PROBE_DIR, f'{name}_rank{get_rank()}.pth'))

    def before_train(self, runner):
        self._dump(runner, 'init')
        with open(os.path.join(PROBE_DIR, f'wrapper_rank{get_rank()}.txt'), 'w') as f:
            f.write(type(runner.model).__name__)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        paths = [os.path.basename(s.img_path) for s in data_batch['data_samples']]
        with open(os.path.join(PROBE_DIR, f'batches_rank{get_rank()}.txt'), 'a') as f:
            f.write(' '.join(paths) + '\\n')

    def after_train(self, runner):
        self._dump(runner, 'final')
'''

MAX_ITERS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _launcher_env(pythonpath=()) -> dict:
    """tools/dist_train.sh's environment: this interpreter, a free port, 1 thread."""
    return tool_env(pythonpath=pythonpath, PORT=_free_port())


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    probe_dir = root / 'probe'
    probe_dir.mkdir()
    (root / 'rank_probe.py').write_text(PROBE)
    data_root = make_data(root / 'data', num_train=8)
    config = write_config(root / 'tiny_upernet.py', data_root, max_iters=MAX_ITERS,
                          ckpt_interval=MAX_ITERS, batch_size=2,
                          custom_hooks="[dict(type='RankProbeHook')]",
                          extra_imports=('rank_probe',))
    work_dir = root / 'work'
    env = _launcher_env(pythonpath=[root])
    env['UFO_PROBE_DIR'] = str(probe_dir)
    # the project's launcher: torchrun, one process per device, --launcher pytorch
    run_tool('dist_train.sh', config, 2, '--work-dir', work_dir, env=env, timeout=300)
    return work_dir, probe_dir


def _probe(probe_dir, name, rank):
    return torch.load(probe_dir / f'{name}_rank{rank}.pth', weights_only=True)


def test_ranks_end_with_identical_weights(ddp_run):
    _, probe_dir = ddp_run
    assert (probe_dir / 'wrapper_rank0.txt').read_text() == 'MMDistributedDataParallel'
    init = [_probe(probe_dir, 'init', r) for r in (0, 1)]
    final = [_probe(probe_dir, 'final', r) for r in (0, 1)]
    params = [k for k in final[0] if 'running_' not in k and 'num_batches' not in k]
    assert len(params) > 100
    # same start (rank 0's init is broadcast), same end (all-reduced gradients)
    assert all(torch.equal(init[0][k], init[1][k]) for k in params)
    differ = [k for k in params if not torch.equal(final[0][k], final[1][k])]
    assert not differ, f'ranks diverged: {differ[:5]}'
    changed = [k for k in params if not torch.equal(init[0][k], final[0][k])]
    assert len(changed) > len(params) // 2, 'training did not update the weights'


def test_ranks_train_on_different_samples(ddp_run):
    _, probe_dir = ddp_run
    batches = [(probe_dir / f'batches_rank{r}.txt').read_text().split('\n')[:MAX_ITERS]
               for r in (0, 1)]
    assert all(len(b) == MAX_ITERS for b in batches)
    for b0, b1 in zip(*batches):
        assert not set(b0.split()) & set(b1.split())


def test_checkpoint_written_once_by_rank_zero(ddp_run):
    work_dir, probe_dir = ddp_run
    assert checkpoints(work_dir) == [f'iter_{MAX_ITERS}.pth']
    writes = (probe_dir / 'writes_rank0.txt').read_text().split()
    assert [os.path.basename(w) for w in writes].count(f'iter_{MAX_ITERS}.pth') == 1
    assert not (probe_dir / 'writes_rank1.txt').exists(), 'rank 1 wrote files'

    ckpt = safe_torch_load(work_dir / f'iter_{MAX_ITERS}.pth')
    assert ckpt['meta']['iter'] == MAX_ITERS
    assert len(ckpt['rng_states']) == 2  # both ranks' RNG states, for exact resume
    # The checkpoint is rank 0's model, BN statistics included.
    rank0 = _probe(probe_dir, 'final', 0)
    saved = load_state_dict(work_dir / f'iter_{MAX_ITERS}.pth')
    assert saved.keys() == rank0.keys()
    assert all(torch.equal(saved[k], rank0[k]) for k in saved)


def test_prepare_distributed_cpu_config_changes():
    """What tools/train.py changes for --launcher pytorch on a CPU-only machine."""
    from mmengine.config import Config

    from ufo_mm.engine.distributed import prepare_distributed
    if torch.cuda.is_available():
        pytest.skip('CPU-only behaviour')
    cfg = Config(dict(launcher='none', model=dict(backbone=dict(norm_cfg=dict(type='SyncBN')))))
    assert not prepare_distributed(cfg)  # not distributed: untouched
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'

    cfg = Config(dict(launcher='slurm', model=dict()))
    with pytest.raises(RuntimeError, match='--launcher pytorch'):
        prepare_distributed(cfg)

    cfg = Config(dict(launcher='pytorch', sync_bn='torch', model=dict(
        backbone=dict(norm_cfg=dict(type='SyncBN')),
        decode_head=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)))))
    saved = {k: os.environ.pop(k, None) for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR')}
    try:
        with pytest.raises(RuntimeError, match='torchrun'):
            prepare_distributed(cfg)
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
    # the config was already made CPU-ready before the process group failed
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.decode_head.norm_cfg == dict(type='BN', requires_grad=True)
    assert 'sync_bn' not in cfg
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=False)


def _dist_train(config, work_dir, *extra, **popen_kw):
    """Start a 2-process run with tools/dist_train.sh; its output goes to
    ``work_dir``.log (a pipe could fill up)."""
    cmd = tool_command('dist_train.sh', config, 2, '--work-dir', work_dir, *extra)
    with open(f'{work_dir}.log', 'a') as log:
        return subprocess.Popen(cmd, env=_launcher_env(), cwd=str(REPO), stdout=log,
                                stderr=subprocess.STDOUT, **popen_kw)


def _tail(work_dir) -> str:
    with open(f'{work_dir}.log') as f:
        return f.read()[-4000:]


@pytest.mark.slow
def test_ddp_killed_run_resumes_to_identical_weights(tmp_path):
    """Both ranks killed (the whole torchrun process group) after a checkpoint;
    the resumed 2-process run ends where an uninterrupted one does."""
    import signal
    import time
    max_iters, interval = 20, 5
    data_root = make_data(tmp_path / 'data', num_train=8)
    config = write_config(tmp_path / 'tiny_upernet.py', data_root, max_iters=max_iters,
                          ckpt_interval=interval, dropout=0.1)
    full = _dist_train(config, tmp_path / 'full')
    assert full.wait(timeout=300) == 0, _tail(tmp_path / 'full')

    work_dir = tmp_path / 'killed'
    proc = _dist_train(config, work_dir, start_new_session=True)
    deadline = time.time() + 240
    while not (work_dir / 'last_checkpoint').exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert f'iter_{max_iters}.pth' not in checkpoints(work_dir)

    resumed = _dist_train(config, work_dir, '--resume')
    assert resumed.wait(timeout=300) == 0, _tail(work_dir)
    final = safe_torch_load(work_dir / f'iter_{max_iters}.pth')
    reference = safe_torch_load(tmp_path / 'full' / f'iter_{max_iters}.pth')
    assert len(final['rng_states']) == 2
    differ = [k for k in final['state_dict']
              if not torch.equal(final['state_dict'][k], reference['state_dict'][k])]
    assert not differ, differ[:5]
