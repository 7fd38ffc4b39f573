"""Distributed training on CPU-only machines (gloo), for mmengine 0.10.

mmengine's ``--launcher pytorch`` path assumes a GPU twice:

- ``init_dist`` calls ``torch.cuda.set_device(LOCAL_RANK)``, which on a
  CPU-only torch build fails with ``AttributeError: module 'torch._C' has no
  attribute '_cuda_setDevice'``;
- ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to
  ``DistributedDataParallel``, which refuses device ids for a CPU module.

:func:`prepare_distributed` fixes both before the Runner is built: it starts
the process group itself (the Runner then skips ``init_dist``) with gloo, and
sets ``model_wrapper_cfg`` so that DDP gets ``device_ids=None``. On a machine
with CUDA it does nothing, so GPU training takes mmengine's usual path.

SyncBN needs CUDA (``SyncBatchNorm expected input tensor to be on GPU``), so
on CPU every ``SyncBN`` in the model config becomes ``BN`` (with a warning) and
``sync_bn`` is dropped. With BN, gradients are still averaged over ranks and
the weights stay identical, but each rank keeps its own BN running statistics
(mmengine's DDP wrapper does not broadcast buffers) and checkpoints hold
rank 0's.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log

__all__ = ['prepare_distributed']

# What torchrun (and torch.distributed.launch) put in each worker's environment.
_TORCHRUN_ENV = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def _uses_cpu() -> bool:
    return not torch.cuda.is_available()


def _init_gloo(dist_cfg: dict) -> None:
    missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher pytorch needs the environment that torchrun sets; missing '
            f'{missing}. Start training with tools/dist_train.sh or '
            '`torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch`.')
    backend = dist_cfg.get('backend', 'gloo')
    if backend != 'gloo':
        print_log(f"no CUDA: using the 'gloo' backend instead of {backend!r}",
                  logger='current')
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(
        backend='gloo', init_method='env://', rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def _cpu_model_wrapper_cfg(cfg) -> None:
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        # Same as mmengine's default wrapper, minus the GPU device ids.
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False),
            device_ids=None)
        return
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
    if isinstance(wrapper_type, str):
        wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
    if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
        wrapper.setdefault('device_ids', None)


_SYNC_NORMS = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm')


def sync_bn_to_bn(node) -> int:
    """Replace SyncBN types in a (nested) config by BN; returns how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in _SYNC_NORMS:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += sync_bn_to_bn(value)
    return count


def prepare_distributed(cfg) -> bool:
    """Make ``cfg.launcher`` work on a CPU-only machine; call before building the Runner.

    Args:
        cfg: the training/testing config, with ``cfg.launcher`` set.

    Returns:
        True when it changed something (CPU and a launcher other than 'none').

    Raises:
        RuntimeError: a launcher other than 'pytorch' on CPU (slurm/mpi setup
            picks GPUs in mmengine), or torchrun's environment is missing.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or not _uses_cpu():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs GPUs with mmengine; on CPU-only machines use '
            '--launcher pytorch under torchrun (one process per node: '
            'torchrun --nnodes N --node_rank R --master_addr HOST ...).')
    reverted = sync_bn_to_bn(cfg.get('model', {}))
    if cfg.pop('sync_bn', None) is not None:
        reverted += 1
    if reverted:
        print_log(f'no CUDA: SyncBN needs a GPU, so {reverted} SyncBN setting(s) in the config '
                  'became BN (per-rank batch statistics)', logger='current', level=30)
    _cpu_model_wrapper_cfg(cfg)
    if not torch_dist.is_initialized():
        _init_gloo(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    return True
