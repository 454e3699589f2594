#!/usr/bin/env bash
# Set up everything on a machine without ROS: .venv/ at the repository root holding ROS 2 Kilted
# (PyPI wheels), torch (CPU), the project's dependencies, and this package built and installed
# into that prefix (messages included). Idempotent: a second run checks and changes nothing.
#
# Needs: Debian/Ubuntu x86_64, python3.11 with its headers (python3.11-dev), cmake, a C/C++
# compiler (build-essential). Override the interpreter with PYTHON=/path/to/python3.11.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
BUILD="$ROOT/build/venv"
PY=${PYTHON:-python3.11}
log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- prerequisites, with the fix for each ------------------------------------------------
command -v "$PY" >/dev/null || die "$PY not found; install Python 3.11 (the ROS 2 wheels are cp311) or set PYTHON"
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "$PY is $("$PY" -V 2>&1); the ROS 2 Kilted wheels need CPython 3.11"
"$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || die "Python.h not found for $PY; install python3.11-dev"
command -v cmake >/dev/null || die "cmake not found; install it (apt-get install cmake)"
command -v c++ >/dev/null || die "no C++ compiler; install build-essential"

# --- the virtual environment --------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
LOCK="$ROOT/requirements/lock.txt"
STAMP="$VENV/.vljepa-lock.sha256"
want=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing pinned dependencies (requirements/lock.txt)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$LOCK"
  echo "$want" > "$STAMP"
else
  log "dependencies up to date"
fi

# --- the ROS wheels' CMake configs name their build image's include dirs -------------------
"$VENV/bin/python" "$ROOT/scripts/fix_ros_wheel_cmake.py" "$VENV"

# --- build and install the messages into the venv prefix ----------------------------------
# The Python sources stay in the checkout (editable): only __init__.py is installed beside the
# generated vljepa_ros.msg, and it extends the package path to the checkout.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
mkdir -p "$BUILD"
FRESH_CONFIGURE=
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  FRESH_CONFIGURE=1
  log "configuring the package (messages) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY \
    -DVLJEPA_INSTALL_PYTHON_SOURCES=OFF -DBUILD_TESTING=OFF >"$BUILD.configure.log" 2>&1 \
    || { tail -30 "$BUILD.configure.log"; die "cmake configure failed (log: $BUILD.configure.log)"; }
fi
cmake --build "$BUILD" -j"$(nproc)" >"$BUILD.build.log" 2>&1 \
  || { tail -30 "$BUILD.build.log"; die "build failed (log: $BUILD.build.log)"; }
if [ -n "${FRESH_CONFIGURE:-}" ]; then
  # rosidl's egg-info lists files that the same build creates after it; a second pass on a
  # fresh build directory settles that list, so a later run of this script changes nothing
  cmake --build "$BUILD" -j"$(nproc)" >>"$BUILD.build.log" 2>&1
fi
cmake --install "$BUILD" >"$BUILD.install.log" 2>&1 \
  || { tail -30 "$BUILD.install.log"; die "install failed (log: $BUILD.install.log)"; }
log "messages built and installed into $VENV"

# --- the library and the `vljepa` command, editable ---------------------------------------
if [ ! -x "$VENV/bin/vljepa" ] || ! "$VENV/bin/python" -m pip show -q vljepa >/dev/null 2>&1; then
  log "installing vljepa_ros (editable) and the vljepa command"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e "$ROOT"
fi

"$VENV/bin/python" -c "import rclpy, vljepa_ros, vljepa_ros.msg" \
  || die "the environment does not import rclpy, vljepa_ros and vljepa_ros.msg"
log "ready: $VENV (try: .venv/bin/vljepa --help)"
