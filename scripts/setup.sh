#!/usr/bin/env bash
# Create the project's virtual environment and install the project with every framework and the
# test tools. Idempotent: re-installs only when pyproject.toml changed. Sourced by the other
# scripts; ZOO_VENV chooses the environment's folder (default .venv in the repository).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ZOO_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating $venv and installing vit-zoo[dev] (torch, tensorflow, jax, flax; a few minutes)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml (this machine keeps them on disk).
  "$venv/bin/python" -m pip install --quiet -e "$root[dev]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
