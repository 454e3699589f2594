#!/usr/bin/env bash
# Re-resolve requirements/top.txt into requirements/lock.txt in a throw-away venv.
# Run it after changing top.txt, then commit both files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3.11}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q -r "$ROOT/requirements/top.txt"
{
  echo "# Resolved from requirements/top.txt by scripts/lock.sh; installed by scripts/setup.sh."
  echo "# torch is pinned without its local tag: the CPU build where a local wheel offers it."
  "$TMP/venv/bin/pip" freeze --all | grep -vE '^(pip|wheel)==' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > "$ROOT/requirements/lock.txt"
echo "wrote $ROOT/requirements/lock.txt ($(grep -vc '^#' "$ROOT/requirements/lock.txt") packages)"
