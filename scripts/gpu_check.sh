#!/usr/bin/env bash
# The GPU check (issue 18): the parity suite with the ports on the GPU, TF32 off in every
# framework, then the forward and training benchmarks in fp32 and mixed bfloat16, printed as the
# same ratio tables as on the CPU. Written for the lent NVIDIA machine, whose image has PyTorch,
# JAX (CUDA), Flax, timm, torchvision and transformers but not TensorFlow, Keras or the other
# peers: those travel as wheels.
#
#   here:   bash scripts/gpu_check.sh wheels        # once: downloads them into .whl/ (ignored)
#   there:  bash scripts/gpu_check.sh parity forward train   # any of the three, in that order
#
# With the device tool: carry [".whl"], timeout_s at most 600 per call; logs go to $OUT (or
# out/gpu_check). Sizing, as planned (the first run should confirm it): parity about 5 minutes
# with 8 workers, forward about 4, train about 4, a machine's start 1-2: two calls,
# "parity forward" then "train", fit the 15 minutes a session is lent.
#
# What runs where: the ports (Flax; Keras on JAX, the image has no TensorFlow) on the GPU, at
# JAX's highest matmul precision; the PyTorch reference the tests compare them with on the CPU,
# as on every machine. The benchmarks run every implementation on the GPU
# (scripts/bench_device.py: --device gpu, TF32 off; --dtype bfloat16 is mixed precision).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
out="${OUT:-$root/out/gpu_check}"
mkdir -p "$out"

#: peers and Keras the device image lacks, pinned as this project's environment has them;
#: cp312 wheels (the image's Python is 3.12), pure-Python ones for any
WHEELS=(
  keras==3.15.1 namex==0.1.0 optree==0.20.0 flax==0.12.8
  segment-anything==1.0 open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  pytorch-fid==0.3.0 pycocotools==2.0.11
)

wheels() {
  mkdir -p .whl
  for w in "${WHEELS[@]}"; do
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "$w" || return 1
  done
  du -sh .whl
}

install_wheels() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || return 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

# TF32 off everywhere (cuBLAS / cuDNN for every framework; XLA's own kernels at JAX's default
# precision take TF32 too); the ports' tests on JAX, whose GPU memory is taken as needed, not
# 75% per worker process up front
export NVIDIA_TF32_OVERRIDE=0 JAX_DEFAULT_MATMUL_PRECISION=highest
export XLA_PYTHON_CLIENT_PREALLOCATE=false KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
export PYTHONUNBUFFERED=1

#: the parity suite's files that hold the ports to the reference (blocks, whole models, every
#: family, mixed precision, GELU, optimizer steps); the converter's file handling needs no GPU
PARITY=(
  parity_tests/test_blocks_parity.py parity_tests/test_models_parity.py parity_tests/families
  parity_tests/test_mixed_precision.py parity_tests/test_gelu.py
  parity_tests/test_optimizer_steps.py
)

parity() {
  "$python" - <<'EOF' || return 1
import jax, torch
print("JAX devices:", jax.devices(), "| torch CUDA:", torch.cuda.is_available(),
      "| matmul precision:", jax.config.jax_default_matmul_precision)
if jax.default_backend() != "gpu":
    raise SystemExit("JAX does not run on the GPU: the parity run would test the CPU")
EOF
  # the reference runs on the CPU in every worker: 2 threads each on the 16 cores
  OMP_NUM_THREADS=2 "$python" -m pytest -p no:cacheprovider -q -n 8 --dist loadfile \
    --no-loadscope-reorder --durations=15 --junitxml "$out/parity.xml" "${PARITY[@]}" \
    2>&1 | tee "$out/parity.log"
}

forward() {
  local impls=(torchvision timm reference keras-jax flax)
  for dtype in float32 bfloat16; do
    "$python" scripts/benchmark.py --device gpu --dtype "$dtype" --repeats 10 --timeout 240 \
      --impls "${impls[@]}" 2>&1 | tee "$out/forward_$dtype.log"
  done
}

train() {
  local impls=(torchvision timm segment-anything reference keras-jax flax)
  for dtype in float32 bfloat16; do
    "$python" scripts/benchmark.py --train --device gpu --dtype "$dtype" --repeats 10 \
      --timeout 240 --impls "${impls[@]}" 2>&1 | tee "$out/train_$dtype.log"
  done
}

[ $# -gt 0 ] || { sed -n '2,19p' "$0"; exit 2; }
status=0
for step in "$@"; do
  case "$step" in
    wheels) wheels || status=1 ;;
    parity | forward | train)
      install_wheels || exit 1
      echo "== $step ($(date -u +%T))" >&2
      "$step" || status=1
      ;;
    *) echo "gpu_check: unknown step $step (wheels, parity, forward, train)" >&2; exit 2 ;;
  esac
done
exit $status
