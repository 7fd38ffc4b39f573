"""Benchmarks: CPU inference of UFO-ViT against peer backbones and full
models, whole-image segmentation and detection of large images, A/B timing of
two checkouts, and the GPU benchmarks.

``harness`` is the one way a case is run: in a child process of its own,
watched for memory and time, its row read back as a JSON line (each case
module defines ``run_case(case) -> row``). The CPU benchmark: ``zoo`` (what
is measured and how it is built), ``measure`` (its case module: one case, or
a group interleaved, inside a process), ``runner``
(:class:`~ufo_mm.benchmark.runner.Benchmark`: the plan, the skips, the run)
and ``report`` (ratios, tables, CSV, plot); ``tools/benchmark.py`` is the
command line, its docstring says what is measured. ``large_image`` and
``large_detection`` (case modules and their tables; ``tools/benchmark_large.py``,
``tools/benchmark_large_det.py``), ``ab`` (``tools/benchmark_ab.py``).
``gpu`` is the GPU benchmark (``--device cuda``; one process, CUDA events,
the allocator's peak): :func:`~ufo_mm.benchmark.gpu.run_gpu_benchmark`;
``gpu_stream`` whole against streamed segmentation on a GPU. Import the
submodules; this package imports nothing itself.
"""
