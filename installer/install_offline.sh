#!/usr/bin/env bash
# Install MedView from this offline artefact. Uses no network: everything comes from this folder.
#
#   sudo ./install.sh [TARGET]     for every user of the machine (default TARGET /opt/medview)
#   ./install.sh [TARGET]          for yourself (default TARGET ~/.local/share/medview-app)
#
# Options:
#   --no-system-packages   do not install the bundled Debian packages; only say which are missing
#   --no-integration       no `medview` command on the PATH and no menu entry (a test or portable install)
#   --python PATH          the Python 3.11 to build the environment from (default: Debian's /usr/bin/python3.11,
#                          else python3.11 or python3 on the PATH)
#
# Steps: check SHA256SUMS; install the missing Debian packages from debs/ (as root, Debian 12 only); create a
# Python environment in TARGET/venv and install requirements.lock from wheelhouse/ (pip --no-index
# --require-hashes: these files and nothing else); copy resources/; write TARGET/bin/medview (the launcher,
# which sets MEDVIEW_RESOURCES), TARGET/uninstall.sh, a `medview` link on the PATH and a menu entry.
# Installing again over an existing install replaces it; user settings, data and models are kept.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
system_packages=1
integration=1
python=""
target=""
while (($#)); do
  case "$1" in
    --no-system-packages) system_packages=0; shift ;;
    --no-integration) integration=0; shift ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) target="$1"; shift ;;
  esac
done

root=0
[[ $(id -u) -eq 0 ]] && root=1
if [[ -z $target ]]; then
  if ((root)); then target=/opt/medview; else target="${XDG_DATA_HOME:-$HOME/.local/share}/medview-app"; fi
fi
target="$(realpath -m "$target")"
started=$SECONDS
step() { printf '== %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

step "checking the artefact's files (SHA256SUMS)"
(cd "$here" && sha256sum --quiet --strict -c SHA256SUMS) || die "files of the artefact are damaged or changed: copy it again"
version="$(sed -n 's/^MedView \([^ ]*\) .*/\1/p' "$here/BUILD-INFO.txt")"

# ---------------------------------------------------------------- Debian packages
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [[ -f $here/debs/PACKAGES ]] && command -v dpkg-query >/dev/null; then
  mapfile -t needed <"$here/debs/PACKAGES"
  missing=()
  for package in "${needed[@]}"; do installed "$package" || missing+=("$package"); done
  if ((${#missing[@]})); then
    # shellcheck disable=SC1091
    . /etc/os-release
    if ((system_packages && root)) && [[ ${ID:-} == debian && ${VERSION_ID:-} == 12 ]]; then
      step "installing Debian packages from debs/: ${missing[*]}"
      # every bundled package this machine lacks, given to apt as files: apt installs those files' versions,
      # orders them, and stops (downgrading nothing) if one needs what is neither here nor installed.
      # (Not --no-download: apt counts copying a local .deb as a download.)
      debs=()
      for deb in "$here"/debs/*.deb; do installed "$(dpkg-deb -f "$deb" Package)" || debs+=("$deb"); done
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${debs[@]}" ||
        die "the bundled Debian packages did not install (see apt's message above)"
    elif ((system_packages)); then
      echo "Missing Debian packages: ${missing[*]}" >&2
      echo "As root, run this script again (it installs them from debs/ without a network), or:" >&2
      echo "  apt-get install ${missing[*]}" >&2
      exit 1
    else
      echo "WARNING: missing Debian packages (not installed, --no-system-packages): ${missing[*]}" >&2
    fi
  fi
fi

# ---------------------------------------------------------------- Python 3.11
if [[ -z $python ]]; then
  for candidate in /usr/bin/python3.11 python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python="$(command -v "$candidate")"
      break
    fi
  done
fi
[[ -n $python ]] && "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  die "no Python 3.11 found (Debian 12: apt-get install python3.11, or run this script as root); or give --python PATH"

# ---------------------------------------------------------------- the install folder
if [[ -e $target && ! -f $target/.medview-install ]] && [[ -n $(ls -A "$target" 2>/dev/null) ]]; then
  die "$target exists and is not a MedView install: choose an empty or new folder"
fi
mkdir -p "$target"
touch "$target/.medview-install"
# an earlier install is replaced as a whole: its environment and resources go, user data lives elsewhere
rm -rf "$target/venv" "$target/resources" "$target/bin"

step "Python environment in $target/venv ($("$python" --version))"
# --without-pip: Debian's python3 has no ensurepip unless python3.11-venv is installed; pip comes from the
# wheelhouse instead, run straight from its wheel (pip supports `python pip-*.whl/pip`)
"$python" -m venv --without-pip "$target/venv"
pip_wheel="$(ls "$here"/wheelhouse/pip-*.whl)"
(
  for variable in $(compgen -e | grep '^PIP_' || true); do unset "$variable"; done
  export PIP_CONFIG_FILE=/dev/null  # no pip configuration of this machine can add a source
  "$target/venv/bin/python" "$pip_wheel/pip" install --quiet --no-index --find-links "$here/wheelhouse" \
    --require-hashes --only-binary=:all: --no-cache-dir --no-warn-script-location -r "$here/requirements.lock"
)

step "resources (model bundles, sample data)"
cp -a "$here/resources" "$target/resources"
cp "$here/BUILD-INFO.txt" "$here/README.md" "$target/"

mkdir -p "$target/bin"
cat >"$target/bin/medview" <<EOF
#!/bin/sh
# MedView launcher, written by install.sh: the installed environment and resources; nothing from the network
# (the model bundles are local: HF_HUB_OFFLINE keeps timm's hub client from ever trying; ORT_DISABLE_TELEMETRY
# stops onnxruntime's usage telemetry to Microsoft, which MedView also turns off itself).
MEDVIEW_RESOURCES='$target/resources'
HF_HUB_OFFLINE=1
ORT_DISABLE_TELEMETRY=1
export MEDVIEW_RESOURCES HF_HUB_OFFLINE ORT_DISABLE_TELEMETRY
exec '$target/venv/bin/medview' "\$@"
EOF
chmod 0755 "$target/bin/medview"

if ((root)); then
  link_dir=/usr/local/bin desktop_dir=/usr/share/applications
else
  link_dir="$HOME/.local/bin" desktop_dir="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
fi
link="$link_dir/medview" desktop="$desktop_dir/medview.desktop"
cat >"$target/uninstall.sh" <<EOF
#!/bin/sh
# Remove MedView installed in $target. User settings, data, models and the audit log are kept
# (~/.config/MedView, ~/.local/share/MedView, ~/.cache/MedView of each user): delete those by hand if wanted.
set -e
[ "\$(readlink '$link' 2>/dev/null)" = '$target/bin/medview' ] && rm -f '$link'
grep -qs 'Exec=$target/bin/medview' '$desktop' && rm -f '$desktop'
rm -rf '$target'
echo "MedView removed from $target"
EOF
chmod 0755 "$target/uninstall.sh"

if ((integration)); then
  step "command and menu entry"
  mkdir -p "$link_dir" "$desktop_dir"
  if [[ -e $link && $(readlink "$link") != "$target/bin/medview" ]]; then
    echo "WARNING: $link exists and is not MedView's: left alone; start MedView with $target/bin/medview" >&2
  else
    ln -sfn "$target/bin/medview" "$link"
  fi
  cat >"$desktop" <<EOF
[Desktop Entry]
Type=Application
Name=MedView
GenericName=Medical image viewer
Comment=Offline viewer for CT, lung sounds and skin photos with AI findings
Exec=$target/bin/medview %F
Terminal=false
Categories=Graphics;Science;MedicalSoftware;
MimeType=application/dicom;audio/x-wav;audio/flac;image/jpeg;image/png;
EOF
fi

echo "MedView ${version:-} installed in $target in $((SECONDS - started)) s ($(du -sh "$target" | cut -f1))."
echo "Start it with: $( ((integration)) && echo medview || echo "$target/bin/medview")"
echo "Check it with: $target/bin/medview --self-test   (QT_QPA_PLATFORM=offscreen on a machine without a screen)"
