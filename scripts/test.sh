#!/usr/bin/env bash
# Install everything the test suite needs (system peers + Python packages) and run it.
# Safe to run repeatedly; installs only what is missing.  Runs as root on CI.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v storescp >/dev/null 2>&1 || need_apt+=(dcmtk)
command -v Orthanc  >/dev/null 2>&1 || need_apt+=(orthanc)
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)
command -v Xvfb     >/dev/null 2>&1 || need_apt+=(xvfb)
# a real PostgreSQL server for the index tests on that backend (started by the tests)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Qt's offscreen platform still needs these shared libraries
ldconfig -p | grep -q libxkbcommon.so.0 || need_apt+=(libxkbcommon0)
ldconfig -p | grep -q libEGL.so.1 || need_apt+=(libegl1)
ldconfig -p | grep -q libfontconfig.so.1 || need_apt+=(libfontconfig1)
ldconfig -p | grep -q libGL.so.1 || need_apt+=(libgl1)
ldconfig -p | grep -q libdbus-1.so.3 || need_apt+=(libdbus-1-3)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# torch is pinned (CPU build from local disk here); an unpinned torch pulls a multi-GB CUDA build.
$PY -m pip install -q -e ".[train,dev]"
export QT_QPA_PLATFORM=offscreen
exec $PY -m pytest -q -p no:cacheprovider "$@"
