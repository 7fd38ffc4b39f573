"""Load checkpoints with ``torch.load(weights_only=True)`` and a small allow-list.

Since torch 2.6, ``torch.load`` only unpickles tensors, containers and a few
torch types unless more globals are allowed.  mmengine 0.10.7 calls bare
``torch.load``, so ``Runner.resume`` fails on its own training checkpoints:
the message hub holds ``HistoryBuffer`` objects with numpy arrays inside.

This module allows exactly what those checkpoints (and official XCiT/DeiT
classification checkpoints) need, and only for the duration of one load, so
the process-wide ``torch.serialization`` allow-list is never widened.  Nothing
here ever falls back to ``weights_only=False``: a file that needs anything
else is refused with an error naming the file and the refused global.

Public API:

- :data:`SAFE_GLOBALS`: the allow-list.
- :func:`safe_torch_load`: ``torch.load`` for a local path, safely.
- :func:`install_mmengine_safe_loader`: make mmengine's ``CheckpointLoader``
  use :func:`safe_torch_load` for local paths (``Runner.resume``,
  ``load_from``, ``init_cfg=dict(type='Pretrained', ...)``, ``tools/test.py``).
"""
import argparse
import contextlib
import errno
import os
import os.path as osp
import pickle
import re
import struct
import threading
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

try:  # numpy >= 2 (numpy.core is a deprecated alias there)
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

__all__ = [
    'SAFE_GLOBALS', 'CheckpointError', 'UnsafeCheckpointError',
    'safe_torch_load', 'install_mmengine_safe_loader'
]


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling.

    ``HistoryBuffer.__getstate__`` stores its statistics methods, which
    pickle as ``getattr(HistoryBuffer, 'mean')``.  A real ``getattr`` would let
    a pickle reach any attribute of any allowed object (``__globals__``, bound
    methods, ...); this one only returns public methods defined on
    ``HistoryBuffer`` itself.
    """
    if (obj is HistoryBuffer and isinstance(name, str)
            and not name.startswith('_')
            and callable(vars(HistoryBuffer).get(name))):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr({obj!r}, {name!r}) '
        'was not allowed: only public HistoryBuffer methods may be looked up')


# Numeric numpy dtype classes (numpy.dtypes.Float64DType, Int64DType, ...).
# Unpickling a dtype ends with BUILD, which torch only runs on allowed types.
# Object, void (structured) and string dtypes are deliberately left out.
_NUMERIC_DTYPE_CLASSES = sorted(
    {type(np.dtype(code))
     for code in np.typecodes['AllInteger'] + np.typecodes['AllFloat'] + '?'},
    key=lambda cls: cls.__name__)

# Everything torch's weights-only unpickler must accept beyond its defaults.
# Already allowed by torch itself, so not listed: collections.OrderedDict
# (state dicts, message hub) and _codecs.encode (bytes under pickle protocol 2).
SAFE_GLOBALS: list = [
    # mmengine message hub: one buffer per logged scalar; no custom reduce,
    # restored by its own __setstate__ from plain arrays and methods.
    HistoryBuffer,
    # HistoryBuffer state stores HistoryBuffer.min/max/mean/current, which
    # pickle as getattr(HistoryBuffer, name): allowed via a narrowed stand-in.
    (_history_buffer_getattr, 'builtins.getattr'),
    # Empty bytes pickle as bytes() under protocol 2 (empty numpy arrays).
    bytes,
    # numpy arrays inside HistoryBuffer: _reconstruct(ndarray, ...) then BUILD
    # from raw data. Both module names: numpy 2 saves numpy._core, numpy 1.x
    # saved numpy.core (most existing mmengine checkpoints).
    np.ndarray,
    (_multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
    (_multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    # numpy scalars (the 'eta' runtime info, logged metrics), same two names.
    (_multiarray.scalar, 'numpy._core.multiarray.scalar'),
    (_multiarray.scalar, 'numpy.core.multiarray.scalar'),
    # dtype of every array and scalar above.
    np.dtype,
    *_NUMERIC_DTYPE_CLASSES,
    # XCiT/DeiT checkpoints carry their training flags as 'args'. Namespace is
    # a plain attribute container (no __setstate__, no code on load), so
    # allowing it lets official checkpoints load without weights_only=False.
    argparse.Namespace,
]

# torch's safe_globals() scope edits one process-wide set; the lock keeps two
# threads from removing each other's entries in the middle of a load.
_LOAD_LOCK = threading.RLock()


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be loaded (truncated or corrupt)."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint was refused because it needs a global off the allow-list.

    Also an ``UnpicklingError``, so code that handled torch's own refusal
    keeps working.  ``refused_global`` is the dotted name, when known.
    """

    def __init__(self, message: str, refused_global: Optional[str] = None):
        super().__init__(message)
        self.refused_global = refused_global


@contextlib.contextmanager
def _allowed_while_loading() -> Iterator[None]:
    """Allow :data:`SAFE_GLOBALS` for the duration of the block only.

    Entries the user already allowed process-wide are not re-added, because
    leaving a ``safe_globals`` scope removes what it added.
    """
    with _LOAD_LOCK:
        if not hasattr(torch.serialization, 'safe_globals'):
            # torch 2.4 has only the process-wide allow-list
            torch.serialization.add_safe_globals(SAFE_GLOBALS)
            yield
            return
        already = set(torch.serialization.get_safe_globals())
        missing = [g for g in SAFE_GLOBALS if g not in already]
        with torch.serialization.safe_globals(missing):
            yield


# How torch names what it refused: a global (builtins are printed without
# their 'builtins.' prefix), a blocked module, or a class it may not build.
_REFUSED_GLOBAL_RE = re.compile(
    r'Unsupported global: GLOBAL (\S+?)(?:\(| was not)'
    r'|unsupported GLOBAL (\S+) whose module'
    r"|Can only (?:build|create new object).* got <class '([^']+)'>")
# RuntimeError texts torch uses for unreadable archives and short files.
_CORRUPT_RUNTIME_RE = re.compile(
    r'PytorchStreamReader|corrupt|unexpected EOF', re.IGNORECASE)


def _refusal(path: str, err: pickle.UnpicklingError) -> UnsafeCheckpointError:
    """Turn torch's weights-only refusal into an error naming file and global."""
    # torch re-raises with a long hint (that recommends weights_only=False);
    # the unpickler's own message is kept as the context.
    inner = err.__context__ if isinstance(
        err.__context__, pickle.UnpicklingError) else err
    reason = str(inner)
    match = _REFUSED_GLOBAL_RE.search(reason)
    if match is None:
        return UnsafeCheckpointError(
            f'Refused to load checkpoint {path!r} for safety: torch\'s '
            f'weights-only unpickler rejected it ({reason})')
    name = next(group for group in match.groups() if group)
    if '.' not in name:
        name = f'builtins.{name}'
    return UnsafeCheckpointError(
        f'Refused to load checkpoint {path!r}: it needs the global '
        f'{name!r}, which is not in ufo_mm.safe_load.SAFE_GLOBALS. '
        'Unpickling arbitrary globals can run code, so it was refused for '
        'safety. Only load files from sources you trust; ufo_mm never '
        'retries with weights_only=False.',
        refused_global=name)


def _corrupt(path: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f'Checkpoint {path!r} is truncated or corrupt and cannot be read '
        f'({type(err).__name__}: {err}). Re-download or re-save it.')


def safe_torch_load(path: Union[str, os.PathLike],
                    map_location: Union[str, torch.device, Callable,
                                        dict, None] = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`SAFE_GLOBALS` allowed.

    Args:
        path: Local checkpoint file.
        map_location: As in ``torch.load``; defaults to ``'cpu'``.

    Returns:
        The unpickled object, usually a dict of tensors and plain values.

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
        UnsafeCheckpointError: the file needs a global that is not allowed.
        CheckpointError: the file is truncated or corrupt.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(errno.ENOENT, 'checkpoint file not found',
                                path)
    try:
        with _allowed_while_loading():
            return torch.load(
                path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from None
    except RuntimeError as err:
        # Other RuntimeErrors (e.g. an unavailable map_location device) are
        # not about the file and pass through unchanged.
        if _CORRUPT_RUNTIME_RE.search(str(err)):
            raise _corrupt(path, err) from err
        raise
    except (EOFError, struct.error, IndexError, KeyError,
            UnicodeDecodeError) as err:
        # Only parsing runs inside the try: these are how a short or garbled
        # legacy (non-zip) checkpoint fails.
        raise _corrupt(path, err) from err


def load_from_local_safe(filename: str, map_location: Any) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local paths.

    Same contract as mmengine's ``load_from_local`` (``~`` expansion,
    ``map_location`` passed through), loading through
    :func:`safe_torch_load`.  mmengine logs the backend as ``name[10:]``,
    i.e. ``local_safe``.
    """
    return safe_torch_load(osp.expanduser(filename), map_location=map_location)


def install_mmengine_safe_loader() -> None:
    """Route mmengine's local-path checkpoint loading through the safe loader.

    Replaces the ``''`` (local path) scheme of
    ``mmengine.runner.checkpoint.CheckpointLoader``; URL schemes (``http://``,
    ``open-mmlab://``, ...) keep mmengine's loaders.  Idempotent.
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        # torch < 2.4 cannot extend its weights-only unpickler, and loads full
        # pickles by default: mmengine's own loader stays, as without ufo_mm.
        return
    # Imported here: mmengine.runner pulls in the whole runner package.
    from mmengine.runner.checkpoint import CheckpointLoader

    if CheckpointLoader._schemes.get('') is load_from_local_safe:
        return
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_safe, force=True)
