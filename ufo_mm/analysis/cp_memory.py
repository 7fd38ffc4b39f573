"""Peak training memory of a UFOViT forward + backward, with and without
activation checkpointing (``with_cp``); ``tools/measure_cp_memory.py`` is the
command line. On CPU each case runs in a fresh process (the RSS high-water mark
belongs to one case only); on CUDA all run in this one."""
import json
import os
import os.path as osp
import subprocess
import sys
import time

from .process_stats import peak_rss_bytes


def training_pass(model, x, amp: bool, scaler=None):
    """One forward + backward (loss: mean square of every output), gradients zeroed."""
    import torch
    dtype = torch.float16 if x.is_cuda else torch.bfloat16
    with torch.autocast(x.device.type, dtype=dtype, enabled=amp):
        loss = sum(f.float().pow(2).mean() for f in model(x))
    (scaler.scale(loss) if scaler is not None else loss).backward()
    model.zero_grad(set_to_none=False)


def measure_training_memory(arch: str, size: int, with_cp: bool, batch: int, repeat: int,
                            device: str = 'cpu', amp: bool = False) -> dict:
    """Build a UFOViT and run ``repeat`` forward + backward passes on a
    (batch, 3, size, size) input; the peak memory (MiB; CPU: this process's RSS
    high-water mark, so run each case in a fresh process; CUDA:
    ``max_memory_allocated``), what model and input held before (``base_mib``),
    and the fastest pass (s)."""
    import torch

    from ufo_mm.models import UFOViT
    torch.manual_seed(0)
    model = UFOViT(arch=arch, with_cp=with_cp).train().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    cuda = device.startswith('cuda')
    scaler = torch.amp.GradScaler('cuda') if cuda and amp else None
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        base = peak_rss_bytes() / 2**20
    times = []
    for _ in range(repeat + (1 if cuda else 0)):  # CUDA: one warm-up pass
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        training_pass(model, x, amp, scaler)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times = times[1:] if cuda else times
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_bytes() / 2**20
    return dict(arch=arch, size=size, with_cp=with_cp, batch=batch, base_mib=base,
                peak_mib=peak, seconds=min(times), device=device, amp=amp,
                threads=torch.get_num_threads())


def measure_in_fresh_process(**case) -> dict:
    """:func:`measure_training_memory` of ``case`` in a new Python process."""
    code = ('import json, sys; from ufo_mm.analysis.cp_memory import measure_training_memory; '
            'print(json.dumps(measure_training_memory(**json.loads(sys.argv[1]))))')
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in [env.get('PYTHONPATH')] if p])
    out = subprocess.run([sys.executable, '-c', code, json.dumps(case)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_cases(arch: str, sizes, batch: int = 1, repeat: int = 2, device: str = 'cpu',
                  amp: bool = False) -> list:
    """Every (size, with_cp False then True) case; CPU cases in fresh processes."""
    rows = []
    for size in sizes:
        for with_cp in (False, True):
            case = dict(arch=arch, size=size, with_cp=with_cp, batch=batch, repeat=repeat,
                        device=device, amp=amp)
            rows.append(measure_training_memory(**case) if device.startswith('cuda')
                        else measure_in_fresh_process(**case))
    return rows


def cp_memory_table(rows, label: str) -> str:
    """Markdown table of :func:`measure_training_memory` results."""
    lines = [f'| input | with_cp | {label} | train part (MiB) | s / pass |', '|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['size']}x{r['size']} | {r['with_cp']} | {r['peak_mib']:.0f} | "
                     f"{r['peak_mib'] - r['base_mib']:.0f} | {r['seconds']:.3f} |")
    return '\n'.join(lines)
