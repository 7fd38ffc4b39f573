#!/usr/bin/env bash
# Create .venv in the repository and install ufo-mm with the exact, tested
# stack of a constraints file (requirements/constraints.txt: torch 2.14.1 with
# torchvision 0.29.1, mmcv 2.1.0, mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain
# 1.2.0, timm 1.0.31, and every other package's version). The package itself
# declares ranges only (setup.cfg).
#
#   UFO_MM_CONSTRAINTS=requirements/constraints-torch2.13-cpu.txt \
#   UFO_MM_VENV=.venv-torch2.13 bash tools/setup_env.sh   # the alternative, no torchvision
#
# Idempotent: a second run with a warm cache installs nothing new and rebuilds
# nothing.  mmcv 2.1.0 has no binary wheel for these torch versions on PyPI, so
# it is built from source with ops once per torch version and the wheel is
# cached outside the work tree (UFO_MM_WHEEL_CACHE, default
# ~/.cache/ufo_mm/wheels, one folder per torch version).
#
# torchvision, mmpretrain (whose models need torchvision) and timm only where
# the constraints file pins them: torch 2.14.1 and torchvision 0.29.1 are a
# matching pair; PyPI's torchvision does not load beside the torch 2.13.0 CPU
# wheel, and mmdet/mmseg crash on import when it is present but broken.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${UFO_MM_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # the mmcv build runs elsewhere
CONSTRAINTS="${UFO_MM_CONSTRAINTS:-$ROOT/requirements/constraints.txt}"
CONSTRAINTS="$(cd "$(dirname "$CONSTRAINTS")" && pwd)/$(basename "$CONSTRAINTS")"
PY="${PYTHON:-python3}"
pinned() { sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$CONSTRAINTS"; }
TORCH_VERSION="$(pinned torch)"
TORCHVISION_VERSION="$(pinned torchvision)"
MMCV_VERSION="$(pinned mmcv)"
MMPRETRAIN_VERSION="$(pinned mmpretrain)"
TIMM_VERSION="$(pinned timm)"
SAHI_VERSION="$(pinned sahi)"
RASTERIO_VERSION="$(pinned rasterio)"
CACHE="${UFO_MM_WHEEL_CACHE:-$HOME/.cache/ufo_mm/wheels}/torch-$TORCH_VERSION"
export TORCH_VERSION TORCHVISION_VERSION MMCV_VERSION MMPRETRAIN_VERSION TIMM_VERSION SAHI_VERSION \
  RASTERIO_VERSION
# the package's extras this stack takes (setup.cfg): pretraining with mmpretrain, timm, and
# rasterio (GDAL) for Cloud Optimized GeoTIFF labels and the GeoTIFF tests
EXTRAS="dev${MMPRETRAIN_VERSION:+,pretrain}${TIMM_VERSION:+,pretrain-dev}${RASTERIO_VERSION:+,geo}"

step() { echo "[setup_env] $*"; }
fail() { echo "[setup_env] FAILED at step: $CURRENT_STEP" >&2; }
CURRENT_STEP="start"
trap fail ERR

CURRENT_STEP="create virtualenv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  step "$CURRENT_STEP"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)

# Fast path: everything already importable and the package installed from this tree.
CURRENT_STEP="check existing environment"
if "$VPY" - "$ROOT" <<'PYEOF' 2>/dev/null
import os, sys, importlib.util, pathlib
root = pathlib.Path(sys.argv[1]).resolve()
import torch, mmcv, mmengine, mmdet, mmseg, pycocotools, pytest, xdist  # noqa: F401
from mmcv.ops import RoIAlign, nms  # noqa: F401
assert torch.__version__.split("+")[0] == os.environ["TORCH_VERSION"], torch.__version__
assert mmcv.__version__ == os.environ["MMCV_VERSION"], mmcv.__version__
if os.environ["TORCHVISION_VERSION"]:
    import torchvision
    assert torchvision.__version__.split("+")[0] == os.environ["TORCHVISION_VERSION"]
else:
    assert importlib.util.find_spec("torchvision") is None, "torchvision must not be installed"
for name in ("mmpretrain", "timm", "sahi", "rasterio"):  # at the pinned version where the stack pins it
    if os.environ[name.upper() + "_VERSION"]:
        assert importlib.import_module(name).__version__ == os.environ[name.upper() + "_VERSION"]
spec = importlib.util.find_spec("ufo_mm")
assert spec is not None and pathlib.Path(spec.origin).resolve().is_relative_to(root)
PYEOF
then
  step "environment at $VENV is complete; nothing to do"
  exit 0
fi

CURRENT_STEP="install build tools (pip, setuptools<81, wheel, ninja, psutil)"
step "$CURRENT_STEP"
"${PIP[@]}" install -c "$CONSTRAINTS" "pip>=23" "setuptools>=77.0.3,<81" wheel ninja psutil

CURRENT_STEP="install torch==$TORCH_VERSION${TORCHVISION_VERSION:+ and torchvision==$TORCHVISION_VERSION}"
step "$CURRENT_STEP"
"${PIP[@]}" install -c "$CONSTRAINTS" "torch==$TORCH_VERSION" \
  ${TORCHVISION_VERSION:+"torchvision==$TORCHVISION_VERSION"}

CURRENT_STEP="build or reuse the mmcv==$MMCV_VERSION wheel with ops"
mkdir -p "$CACHE"
PYTAG="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL="$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$WHEEL" ]; then
  step "$CURRENT_STEP: building from source (about 23 minutes on 2 cores, measured on an AVX2 EPYC; the wheel is cached for next time)"
  # --no-cache-dir: pip would reuse its cached wheel, built against another torch
  BUILD="$(mktemp -d)"
  "${PIP[@]}" download --no-cache-dir --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD"
  tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
  SRC="$BUILD/mmcv-$MMCV_VERSION"
  # torch >= 2.10's headers need C++20 (ATen.h says which); mmcv 2.1.0 asks for C++17
  if grep -q "C++20 or later" "$("$VPY" -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')/ATen/ATen.h"; then
    step "this torch needs C++20: building mmcv with -std=c++20"
    sed -i "s/'-std=c++17'/'-std=c++20'/" "$SRC/setup.py"
  fi
  (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" FORCE_CUDA=0 \
     "$VPY" -m pip --disable-pip-version-check wheel --no-cache-dir --no-build-isolation --no-deps \
     . -w "$BUILD")
  WHEEL_BUILT="$(ls "$BUILD"/mmcv-*.whl)"
  cp "$WHEEL_BUILT" "$CACHE/"
  WHEEL="$CACHE/$(basename "$WHEEL_BUILT")"
  rm -rf "$BUILD"
else
  step "$CURRENT_STEP: reusing cached $WHEEL"
fi
"${PIP[@]}" install --no-deps "$WHEEL"

CURRENT_STEP="install ufo_mm (editable) with its extras [$EXTRAS] at the versions of $(basename "$CONSTRAINTS")"
step "$CURRENT_STEP"
"${PIP[@]}" install -c "$CONSTRAINTS" -e "$ROOT[$EXTRAS]"
if [ -n "$SAHI_VERSION" ]; then
  # the benchmark's sliced detection (setup.cfg extra "bench"): sahi's slicing needs only the
  # stack's numpy, Pillow, shapely and opencv; its command line's click/fire/requests are not
  # wanted, hence --no-deps
  CURRENT_STEP="install sahi==$SAHI_VERSION (no dependencies)"
  step "$CURRENT_STEP"
  "${PIP[@]}" install --no-deps "sahi==$SAHI_VERSION"
fi

CURRENT_STEP="verify the environment"
step "$CURRENT_STEP"
"$VPY" - <<'PYEOF'
import importlib.util, os
import torch, mmcv, mmdet, mmseg, ufo_mm  # noqa: F401
from mmcv.ops import RoIAlign, nms  # noqa: F401
from ufo_mm import cpu_features
extra = ""
if not os.environ["TORCHVISION_VERSION"]:
    assert importlib.util.find_spec("torchvision") is None, "torchvision got installed; remove it"
else:
    import torchvision
    extra += f", torchvision {torchvision.__version__}"
if os.environ["MMPRETRAIN_VERSION"]:
    import mmpretrain, mmpretrain.models  # noqa: F401,E401  its models import torchvision
    extra += f", mmpretrain {mmpretrain.__version__}"
print(f"[setup_env] ok: torch {torch.__version__}{extra}, mmcv {mmcv.__version__}, "
      f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}; {cpu_features.bf16_status()}")
PYEOF
