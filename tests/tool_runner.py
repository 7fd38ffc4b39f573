"""Running a command-line tool as a user would: in a fresh interpreter, from the
repository root, on one thread, with this checkout's ``ufo_mm`` importable.

Every test that runs a tool (``tools/*.py``, ``tools/*.sh``, or the installed
mmdet / mmseg / mmpretrain ``tools/*.py``) goes through :func:`run_tool`.
"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools'


def tool_env(threads=1, pythonpath=(), **extra) -> dict:
    """The environment of a tool process: ``threads`` OpenMP / MKL threads, this
    interpreter for the ``.sh`` launchers (``PYTHON``), the repository and
    ``pythonpath`` ahead of any inherited ``PYTHONPATH``, and ``extra`` variables."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONHASHSEED='0', PYTHON=sys.executable)
    paths = [str(REPO), *map(str, pythonpath)] + [p for p in [env.get('PYTHONPATH')] if p]
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def tool_command(tool, *args) -> list:
    """The command line of ``tool`` ARGS: a bare name (``'train.py'``) is one of
    the repository's tools/; ``.sh`` scripts run under bash, the rest under this
    interpreter."""
    path = TOOLS / tool if isinstance(tool, str) and os.sep not in tool else Path(tool)
    launcher = ['bash'] if path.suffix == '.sh' else [sys.executable]
    return launcher + [str(path)] + [str(a) for a in args]


def _tail(text, n) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors='replace')
    return (text or '')[-n:]


def run_tool(tool, *args, check=True, timeout=600, threads=1, pythonpath=(), env=None,
             cwd=REPO) -> subprocess.CompletedProcess:
    """Run ``tool`` ARGS (see :func:`tool_command`) to completion; the
    CompletedProcess with its ``stdout`` and ``stderr`` as text.

    With ``check`` (the default) a non-zero exit fails the test with the command
    and the tails of both streams; a run past ``timeout`` seconds always does.
    ``env`` replaces :func:`tool_env`'s environment."""
    cmd = tool_command(tool, *args)
    try:
        proc = subprocess.run(cmd, cwd=str(cwd), env=env or tool_env(threads, pythonpath),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f'{" ".join(cmd)}\ndid not finish in {timeout} s:\n'
                             f'{_tail(e.stdout, 3000)}\n{_tail(e.stderr, 6000)}') from None
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)}\nexited with {proc.returncode}:\n'
                             f'{_tail(proc.stdout, 3000)}\n{_tail(proc.stderr, 6000)}')
    return proc


def tool_log(tool, *args, **kw) -> str:
    """:func:`run_tool`'s stdout followed by its stderr (mmengine logs to both)."""
    proc = run_tool(tool, *args, **kw)
    return proc.stdout + proc.stderr
