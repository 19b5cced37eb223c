#!/usr/bin/env bash
# Set up MedView on a fresh Debian machine from this checkout, then run it or test it.
#
#   bash installer/bootstrap.sh run    install everything, open the bundled sample CT
#   bash installer/bootstrap.sh test   install everything plus test tools, run the whole suite
#
# System packages need root: as root they are installed with apt-get; otherwise the
# script checks they are present and prints the apt-get line to run if they are not.
# Python packages go into .venv, with constraints.txt pinning the CPU build of torch
# (anything newer pulls gigabytes of CUDA packages) and PySide6 6.11.3 (6.12.0 crashes).
set -euo pipefail

mode="${1:-}"
case "$mode" in
  run|test) ;;
  *) echo "usage: bash installer/bootstrap.sh run|test" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/.venv"

# Runtime: PortAudio for sound, the xcb/EGL/GL/fontconfig libraries Qt's window needs.
# xvfb/xauth: a virtual screen for the screenshot test and for `run` on a machine without one.
system_packages=(libportaudio2 libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0
                 libegl1 libgl1 libfontconfig1 libdbus-1-3 xvfb xauth)
# Test only: the DICOM validators the export tests run on what MedView writes
# (dciodvfy from dicom3tools checks the object against the standard, dcmdump from dcmtk parses it),
# dcmtk's SCPs, and Orthanc with its DICOMweb plugin: the PACS the send and query/retrieve tests talk to
# (openssl makes the certificate of its TLS test).
test_packages=(dicom3tools dcmtk orthanc orthanc-dicomweb openssl)
[[ $mode == test ]] && system_packages+=("${test_packages[@]}")

missing=()
for package in "${system_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "== installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    held_services=false
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      # orthanc's package would start a system-wide Orthanc service; the tests start their own on loopback
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      held_services=true
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # removed at once, not by a trap: `run` ends in exec, where an EXIT trap would never fire
    [[ $held_services == true ]] && rm -f /usr/sbin/policy-rc.d
  else
    echo "Missing system packages: ${missing[*]}" >&2
    echo "Run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
    echo "then run this script again (no root needed for the rest)." >&2
    exit 1
  fi
fi

extras="."
[[ $mode == test ]] && extras=".[dev]"

python="${PYTHON:-python3}"
if command -v uv >/dev/null 2>&1; then
  echo "== installing Python packages with uv"
  [[ -x $venv/bin/python ]] || uv venv --python "$python" "$venv"
  # uv does not read pip's configuration: hand it pip's find-links folder, which holds
  # the local CPU torch wheel, or it resolves a CUDA torch.
  find_links=()
  for folder in $(pip config get global.find-links 2>/dev/null || true); do
    find_links+=(--find-links "$folder")
  done
  uv pip install --python "$venv/bin/python" "${find_links[@]}" -c constraints.txt -e "$extras"
else
  echo "== installing Python packages with pip"
  [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q -c constraints.txt -e "$extras" 2> >(grep -v "^WARNING: Location" >&2)
fi

if [[ $mode == run ]]; then
  if [[ -z ${DISPLAY:-} && -z ${WAYLAND_DISPLAY:-} && ${QT_QPA_PLATFORM:-} != offscreen ]]; then
    echo "== no display found: starting MedView on a virtual screen (xvfb-run); close it with Ctrl+C"
    exec xvfb-run -a -s "-screen 0 1600x1000x24" "$venv/bin/medview" --sample
  fi
  exec "$venv/bin/medview" --sample
fi

# test: the same checks CI runs (.ci/run calls this script).
echo "== import contracts (lint-imports)"
"$venv/bin/lint-imports"
echo "== ruff"
"$venv/bin/ruff" check medview training tests bench
echo "== mypy (all of medview)"
"$venv/bin/mypy"
echo "== pytest"
export QT_QPA_PLATFORM=offscreen
"$venv/bin/python" -m pytest -q
