#!/usr/bin/env bash
# Run the test suite. Every ROS 2 participant started by the tests stays on this machine
# (DDS discovery on localhost only) and uses a domain id of its own (DESIGN §7).
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + $$ % 100))}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "${MEMORYWAM_VENV:-.venv}/bin/python" -m pytest -q "$@"
