#!/usr/bin/env bash
# The GPU device check: CUDA tests, the GPU benchmark and streamed UperNet on one
# NVIDIA GPU machine that has torch (with CUDA), timm and matplotlib but no
# OpenMMLab package and no network (docs/gpu.md).
#
#   bash tools/device_check.sh prepare        # HERE (network): .whl/ with every wheel it needs
#   bash tools/device_check.sh install        # THERE: install .whl/ into /tmp/site, check imports
#   bash tools/device_check.sh tests          # THERE: install, then the CUDA tests
#   bash tools/device_check.sh smoke          # THERE: install, then tools/infer_large.py --device
#                                             #   cuda:0 (tokens on the GPU and on the host) and
#                                             #   streamed UperNet at 2048 / 8192 / 32768
#   bash tools/device_check.sh bench [ARGS]   # THERE: install, then the GPU benchmark and
#                                             #   streamed UperNet / Semantic FPN up to 32768
#   bash tools/device_check.sh all            # THERE: install, tests, bench
#
# Outputs (CSV, markdown tables, plot, logs) go to $OUT (default work_dirs/device_check).
#
# prepare: mmseg 1.2.2 imports mmcv.ops when it is imported, so mmcv needs its
# compiled ops even for UperNet, which uses none of them on the GPU. There is no
# mmcv 2.1.0 wheel for the device's torch, so it is built here, once, against the
# device's torch version and Python (DEVICE_TORCH, DEVICE_PYTHON; default 2.11.0 and
# 3.12, what the lent H200 has), CPU ops only (MMCV_WITH_OPS=1 FORCE_CUDA=0: about
# 46 core-minutes), with the C++ standard that torch's headers ask for, and cached in
# ~/.cache/ufo_mm/device/ (UFO_MM_DEVICE_CACHE). The pure-Python packages travel as
# wheels too, at the versions of requirements/constraints.txt. Mask R-CNN needs mmcv's
# CUDA ops (RoIAlign, NMS), which this build lacks: detection is not in the check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEP="${1:-all}"
shift || true
OUT="${OUT:-$ROOT/work_dirs/device_check}"
WHL="$ROOT/.whl"
SITE="${UFO_MM_DEVICE_SITE:-/tmp/site}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
pinned() { sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$CONSTRAINTS"; }

# Pure-Python wheels the device lacks (its image has numpy, scipy, matplotlib,
# opencv, pyyaml, rich, pillow, packaging, tifffile, timm, pytest).
PURE=(mmengine addict yapf platformdirs termcolor mmsegmentation prettytable wcwidth
      ftfy terminaltables)
# Wheels with compiled code, for the device's Python.
BINARY=(regex)

prepare() {
  local py_version="${DEVICE_PYTHON:-3.12}" torch_version="${DEVICE_TORCH:-2.11.0}"
  local mmcv_version
  mmcv_version="$(pinned mmcv)"
  local cache="${UFO_MM_DEVICE_CACHE:-$HOME/.cache/ufo_mm/device}"
  local tag="cp${py_version/./}"
  local wheels="$cache/wheels/torch-$torch_version-$tag"
  mkdir -p "$wheels" "$WHL"
  local mmcv_wheel
  mmcv_wheel="$(ls "$wheels"/mmcv-"$mmcv_version"-"$tag"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$mmcv_wheel" ]; then
    local py
    py="$(command -v "python$py_version" || true)"
    [ -n "$py" ] || py="$(ls "$HOME"/.pyenv/versions/"$py_version"*/bin/python"$py_version" 2>/dev/null | head -n1 || true)"
    [ -n "$py" ] || { echo "device_check: no python$py_version here to build mmcv for the device" >&2; exit 1; }
    local venv="$cache/build-venv-$tag"
    echo "[device_check] building mmcv $mmcv_version for Python $py_version and torch $torch_version (CPU ops; about 46 core-minutes)"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip -q install "torch==$torch_version" "setuptools>=77.0.3,<81" wheel ninja numpy
    local build
    build="$(mktemp -d)"
    "$venv/bin/python" -m pip -q download --no-cache-dir --no-deps --no-binary :all: "mmcv==$mmcv_version" -d "$build"
    tar -xzf "$build/mmcv-$mmcv_version.tar.gz" -C "$build"
    local src="$build/mmcv-$mmcv_version"
    if grep -q "C++20 or later" "$("$venv/bin/python" -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')/ATen/ATen.h"; then
      echo "[device_check] torch $torch_version needs C++20: building mmcv with -std=c++20"
      sed -i "s/'-std=c++17'/'-std=c++20'/" "$src/setup.py"
    fi
    (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
       "$venv/bin/python" -m pip --disable-pip-version-check wheel --no-cache-dir \
       --no-build-isolation --no-deps . -w "$build")
    cp "$build"/mmcv-*.whl "$wheels/"
    rm -rf "$build"
    mmcv_wheel="$(ls "$wheels"/mmcv-"$mmcv_version"-"$tag"-*.whl | head -n1)"
  fi
  rm -f "$WHL"/*.whl
  cp "$mmcv_wheel" "$WHL/"
  local specs=()
  for name in "${PURE[@]}"; do specs+=("$name==$(pinned "$name")"); done
  python3 -m pip -q download --no-deps --only-binary=:all: -d "$WHL" "${specs[@]}"
  specs=()
  for name in "${BINARY[@]}"; do specs+=("$name==$(pinned "$name")"); done
  python3 -m pip -q download --no-deps --only-binary=:all: --python-version "$py_version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHL" "${specs[@]}"
  echo "[device_check] .whl/ holds what 'install' will put in $SITE on the device:"
  ls -l "$WHL" | awk 'NR > 1 {printf "  %-70s %6.1f MB\n", $9, $5 / 1e6}'
  du -sh "$WHL" | awk '{print "[device_check] in all " $1 " (the working tree that travels must stay under 64 MiB)"}'
}

install() {
  [ -n "$(ls "$WHL"/*.whl 2>/dev/null)" ] || { echo "device_check: no wheels in .whl/; run 'prepare' first, here" >&2; exit 1; }
  if [ ! -f "$SITE/.ufo_mm_installed" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHL"/*.whl
    touch "$SITE/.ufo_mm_installed"
  fi
  export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  python3 - <<'PYEOF'
import torch, mmcv, mmengine, mmseg, ufo_mm  # noqa: F401,E401
from mmcv.ops import nms  # noqa: F401  mmseg needs the compiled ops to import
print(f'[device_check] ok: torch {torch.__version__} (CUDA {torch.version.cuda}), '
      f'{torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"}, '
      f'mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, '
      f'ufo_mm {ufo_mm.__version__}', flush=True)
PYEOF
}

tests() {
  mkdir -p "$OUT"
  set +e
  PYTHONUNBUFFERED=1 python3 -m pytest -p no:cacheprovider -q -rs -m cuda -o addopts="" \
    tests/cuda "$@" 2>&1 | tee "$OUT/cuda_tests.log"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "[device_check] CUDA tests exit code $rc" | tee -a "$OUT/cuda_tests.log"
  return 0
}

smoke() {
  mkdir -p "$OUT/smoke"
  local dir
  dir="$(mktemp -d)"
  # a random-weight UperNet S12/16 checkpoint and a 3000 x 4000 scene, then the command line
  python3 - "$dir" <<'PYEOF'
import sys
import cv2, torch
from ufo_mm.benchmark.gpu_stream import CONFIGS, build_segmentor, random_image
d = sys.argv[1]
model = build_segmentor('upernet_s12', torch.device('cpu'))
torch.save({'state_dict': model.state_dict()}, f'{d}/upernet_random.pth')
cv2.imwrite(f'{d}/scene.png', random_image(4000)[:3000])
PYEOF
  local cfg=configs/ufo_vit/upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py
  for where in auto cpu; do
    PYTHONUNBUFFERED=1 python3 tools/infer_large.py "$cfg" "$dir/upernet_random.pth" \
      "$dir/scene.png" --device "${SMOKE_DEVICE:-cuda:0}" --token-device "$where" --out-dir "$dir/out_$where" \
      2>&1 | tail -n 2 | tee -a "$OUT/smoke/infer_large.log"
  done
  python3 -c "import cv2, sys; a, b = (cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in sys.argv[1:]); \
print('[device_check] labels with tokens on the GPU and on the host equal:', (a == b).all())" \
    "$dir/out_auto/scene_labels.png" "$dir/out_cpu/scene_labels.png" | tee -a "$OUT/smoke/infer_large.log"
  PYTHONUNBUFFERED=1 python3 tools/benchmark_gpu_stream.py --models upernet_s12 \
    --sides 2048 8192 32768 --precisions tf32 --whole-max-side 4096 --time-budget-s 150 \
    --out-dir "$OUT/smoke" 2>&1 | tee "$OUT/smoke/gpu_stream.log" || true
  rm -rf "$dir"
}

bench() {
  # at most 8 files come back from the device machine: the tables, CSVs and plots of both
  # benchmarks and one log; everything else stays in $WORK
  local work="${WORK:-/tmp/device_check_work}"
  mkdir -p "$OUT" "$work"
  PYTHONUNBUFFERED=1 python3 tools/benchmark.py --device cuda --out-dir "$work/backbones" \
    --time-budget-s "${BACKBONE_BUDGET_S:-150}" "$@" 2>&1 | tee -a "$OUT/device_check.log" || true
  cp "$work"/backbones/gpu_benchmark.{csv,png} "$work"/backbones/gpu_benchmark_tables.md \
    "$OUT/" 2>/dev/null || true
  PYTHONUNBUFFERED=1 python3 tools/benchmark_gpu_stream.py --out-dir "$work/stream" \
    --time-budget-s "${STREAM_BUDGET_S:-180}" 2>&1 | tee -a "$OUT/device_check.log" || true
  cp "$work"/stream/gpu_stream.{csv,md,png} "$OUT/" 2>/dev/null || true
  if [ -n "${GIGA_SIDE:-}" ]; then  # e.g. 65536: UperNet streamed, TF32, bf16 token storage
    PYTHONUNBUFFERED=1 python3 tools/benchmark_gpu_stream.py --models upernet_s12 \
      --sides 2048 "$GIGA_SIDE" --methods stream --precisions tf32 --token-dtype bf16 \
      --time-budget-s 600 --out-dir "$work/giga" 2>&1 | tee -a "$OUT/device_check.log" || true
  fi
}

case "$STEP" in
  prepare) prepare ;;
  install) install ;;
  tests) install; tests "$@" ;;
  smoke) install; smoke ;;
  bench) install; bench "$@" ;;
  all) install; tests; smoke; bench "$@" ;;
  *) echo "usage: bash tools/device_check.sh prepare|install|tests|bench|all" >&2; exit 2 ;;
esac
