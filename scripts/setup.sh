#!/usr/bin/env bash
# Set up memorywam_ros in a virtualenv (default .venv) on a fresh Debian machine or on a robot.
#
#  * No ROS 2 sourced: a plain venv; the ROS 2 Kilted pip wheels provide rclpy and the messages.
#  * ROS 2 sourced (Humble/Jazzy/Kilted, `source /opt/ros/$ROS_DISTRO/setup.bash` first): a venv
#    with --system-site-packages so rclpy, launch and cv_bridge come from the system.
#  * torch: kept if the venv (or the system, with ROS) already imports one; otherwise
#    TORCH_SPEC (default torch==2.13.0, the CPU build on the build machines). On a GPU machine
#    install the CUDA build you want first, or set TORCH_SPEC.
#  * Headless MuJoCo rendering for the simulated arm needs Debian's libegl1 and libgl1-mesa-dri,
#    pyrealsense2 needs libusb-1.0-0; they are installed when missing and we are root
#    (set MEMORYWAM_SKIP_APT=1 to skip).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MEMORYWAM_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*"; }

# Debian libraries: EGL for headless MuJoCo rendering, libusb for pyrealsense2
APT_NEEDED=()
LIBS="$(ldconfig -p 2>/dev/null || true)"
grep -q 'libEGL.so.1' <<<"$LIBS" || APT_NEEDED+=(libegl1 libgl1-mesa-dri)
grep -q 'libusb-1.0.so.0' <<<"$LIBS" || APT_NEEDED+=(libusb-1.0-0)
if [ -z "${MEMORYWAM_SKIP_APT:-}" ] && [ "${#APT_NEEDED[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing ${APT_NEEDED[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_NEEDED[@]}" >/dev/null
fi

if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" 2>/dev/null; then
  SYSTEM_ROS=1
  log "system ROS 2 ${ROS_DISTRO} found: venv with system site packages"
  [ -d "$VENV" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
else
  SYSTEM_ROS=0
  log "no ROS 2 sourced: plain venv + ROS 2 Kilted pip wheels"
  [ -d "$VENV" ] || "$PYTHON" -m venv "$VENV"
fi
# pip install, quiet; its exit status is kept (the filter only hides this machine's find-links noise)
pip_install() {
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}

pip_install --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
if [ "$SYSTEM_ROS" = 0 ]; then
  pip_install ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp ros-kilted-sensor-msgs \
    ros-kilted-trajectory-msgs ros-kilted-std-msgs ros-kilted-std-srvs ros-kilted-diagnostic-msgs
fi
log "installing memorywam_ros (editable, dev + sim + realsense extras)"
pip_install -e ".[dev,sim,realsense]"
"$VENV/bin/python" -c "import torch, diffusers, rosbags, memorywam_ros.model" \
  && log "ok: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())')"
