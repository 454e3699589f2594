#!/usr/bin/env bash
# The whole test suite, from a fresh clone or an existing checkout: set up .venv (idempotent,
# see scripts/setup.sh), then lint (ruff), type-check the pure-Python library (mypy) and run
# pytest. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k messages`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh

echo "[test] ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] mypy (pure-Python library)"
.venv/bin/mypy vljepa_ros scripts/fix_ros_wheel_cmake.py
echo "[test] pytest"
# Nothing may be fetched from a model hub at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
