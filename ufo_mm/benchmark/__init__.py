"""CPU inference benchmark of UFO-ViT against peer backbones, and full models.

``zoo`` (what is measured and how it is built), ``measure`` (one case, or a
group interleaved, inside a process), ``isolation`` (each case in a fresh
process, watched and retried), ``runner`` (:class:`~ufo_mm.benchmark.runner.Benchmark`:
the plan, the skips, the run) and ``report`` (ratios, tables, CSV, plot).
``tools/benchmark.py`` is the command line; its docstring says what is
measured. ``gpu`` is the GPU benchmark (``--device cuda``; one process, CUDA
events, the allocator's peak): :func:`~ufo_mm.benchmark.gpu.run_gpu_benchmark`.
Import the submodules; this package imports nothing itself.
"""
