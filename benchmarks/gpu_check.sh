#!/usr/bin/env bash
# The GPU check in one command (docs/gpu.md): about 8 minutes on one GPU, safe to run twice.
#   benchmarks/gpu_check.sh [--dry] [--out DIR] [--data-root DIR] [--budget SECONDS] [--jobs 1 2 4 8]
# PYTHON= picks the interpreter (default: the project's .venv if there is one, else python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$root/benchmarks/gpu_check.py" "$@"
