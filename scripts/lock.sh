#!/usr/bin/env bash
# Re-resolve requirements/top.txt into requirements/lock.txt. Run it after changing top.txt,
# then commit both files. It resolves with pip's installation report in a throw-away venv
# (nothing is installed) and pins each project by the name it has on the index: the ROS wheels'
# installed metadata names (e.g. action_msgs) differ from their index names (ros-action-msgs),
# so `pip freeze` output cannot be installed back.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3.11}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q --dry-run --ignore-installed --report "$TMP/report.json" \
  -r "$ROOT/requirements/top.txt"
"$TMP/venv/bin/python" - "$TMP/report.json" "$ROOT/requirements/lock.txt" <<'PYEOF'
import json
import sys

report = json.load(open(sys.argv[1]))
pins = set()
for item in report["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    version = version.split("+")[0]  # torch 2.13.0+cpu: the CPU build where a local wheel offers it
    pins.add(f"{name.lower()}=={version}")
with open(sys.argv[2], "w") as out:
    out.write("# Resolved from requirements/top.txt by scripts/lock.sh; installed by scripts/setup.sh.\n")
    out.writelines(f"{pin}\n" for pin in sorted(pins))
print(f"wrote {sys.argv[2]} ({len(pins)} packages)")
PYEOF
