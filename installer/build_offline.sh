#!/usr/bin/env bash
# Build MedView's offline installer on a connected Linux x86_64 build machine (Debian 12 for the .deb files).
#
#   bash installer/build_offline.sh [--out DIR] [--no-debs]
#
# Writes DIR/medview-offline-<version>-linux-x86_64.tar.gz and its .sha256 (DIR defaults to dist/ in
# this checkout, which git ignores). The artefact installs MedView on a Debian 12 amd64 machine with no
# network at all: unpack it and run its install.sh (installer/install_offline.sh). What it holds:
#
#   wheelhouse/         every Python package as a wheel for CPython 3.11 on manylinux x86_64 with glibc <= 2.36
#                       (Debian 12): medview, built from this checkout, and its runtime dependencies resolved
#                       with constraints.txt. torch is the CPU build that pip's own configuration finds (its
#                       find-links folder, PLATFORM.md); the build stops if a CUDA build or package slips in.
#   requirements.lock   every wheel pinned by version and sha256: pip installs these files and nothing else
#   resources/          the model bundles and the sample data (found through MEDVIEW_RESOURCES)
#   debs/               the Debian packages MedView needs beyond a base system (Python 3.11, Qt's X11/GL
#                       libraries, PortAudio) with their dependencies, for a machine that has none of them
#   install.sh, README.md, BUILD-INFO.txt, SHA256SUMS (sha256 of every other file)
#
# Needs: python3.11 with venv and pip (PYTHON overrides), git, tar, sha256sum; for debs/ apt-get on Debian 12
# with current package lists (run apt-get update first). Takes a few minutes and ~2 GB in a temporary folder,
# removed at the end. Elsewhere than on the machine PLATFORM.md describes, point pip at a CPU torch first,
# e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/dist"
with_debs=1
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --no-debs) with_debs=0; shift ;;
    *) echo "usage: bash installer/build_offline.sh [--out DIR] [--no-debs]" >&2; exit 2 ;;
  esac
done

python="${PYTHON:-python3}"
pip_version=24.3.1          # the pip that runs the install on the target machine (from its wheel)
glibc_max_minor=36          # Debian 12 has glibc 2.36: no wheel may need a newer one
# Runtime system packages: bootstrap.sh's list without xvfb/xauth (a virtual screen, not needed on a workstation;
# the self-test runs offscreen), plus the Python 3.11 that Debian 12 ships, which a minimal install may lack.
runtime_packages=(python3.11 libportaudio2 libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0
                  libegl1 libgl1 libfontconfig1 libdbus-1-3)

step() { printf '== %s\n' "$*"; }
die() { printf 'build_offline: %s\n' "$*" >&2; exit 1; }

[[ $(uname -m) == x86_64 ]] || die "build on Linux x86_64 (the artefact is for Debian 12 amd64)"
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || die "$python is not Python 3.11 (set PYTHON)"
cd "$repo"
version="$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
name="medview-offline-$version-linux-x86_64"
started=$SECONDS

work="$(mktemp -d "${TMPDIR:-/tmp}/medview-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
wheelhouse="$stage/wheelhouse"
mkdir -p "$wheelhouse" "$out"

step "build environment with pip $pip_version"
"$python" -m venv "$work/build-env"
build_python="$work/build-env/bin/python"
"$build_python" -m pip install -q "pip==$pip_version"

step "medview wheel from this checkout (the files git sees: tracked and new, not ignored)"
mkdir "$work/source"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$work/source"
  revision="$(git describe --always --dirty 2>/dev/null || echo unknown)"
else
  cp -a pyproject.toml README.md medview training "$work/source/"
  revision="not a git checkout"
fi
"$build_python" -m pip wheel -q --no-deps --wheel-dir "$wheelhouse" "$work/source"
medview_wheel="$(ls "$wheelhouse"/medview-"$version"-*.whl)"

# The target's tags, whatever the build machine is: CPython 3.11, manylinux up to glibc 2.36. pip does not
# expand a manylinux_2_X tag to the older ones, so each is listed.
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)
for ((minor = glibc_max_minor; minor >= 17; minor--)); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

step "runtime dependencies (constraints.txt; torch from pip's configured find-links)"
"$build_python" -m pip download -q "${target[@]}" -c constraints.txt -d "$wheelhouse" "$medview_wheel" \
  "pip==$pip_version" 2> >(grep -v "^WARNING: Location" >&2)  # this machine's pip config names absent folders
torch_wheel="$(cd "$wheelhouse" && ls torch-*.whl)"
[[ $torch_wheel == *+cpu-* ]] || die "torch is not the CPU build ($torch_wheel): give pip a CPU torch (see the header)"
cuda="$(cd "$wheelhouse" && ls | grep -iE '^(nvidia|triton|cuda)' || true)"
[[ -z $cuda ]] || die "CUDA packages in the wheelhouse: $cuda"

step "requirements.lock: every wheel by version and sha256, resolved again from the wheelhouse alone"
# pip's installation report gives each resolved wheel's name, version and sha256; with --no-index and no
# configuration (PIP_CONFIG_FILE=/dev/null, no PIP_* variables) the wheelhouse is the only source.
# make_lock.py (shared with the Windows build) writes the lock and stops on a wheel the lock does not use.
(
  for variable in $(compgen -e | grep '^PIP_' || true); do unset "$variable"; done
  export PIP_CONFIG_FILE=/dev/null
  "$build_python" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$wheelhouse" \
    "${target[@]}" --report "$work/report.json" "medview==$version" "pip==$pip_version"
)
"$build_python" installer/windows/make_lock.py "$work/report.json" "$wheelhouse" "$stage/requirements.lock"

step "resources: model bundles and sample data"
mkdir -p "$stage/resources"
cp -a resources/models resources/samples "$stage/resources/"
find "$stage/resources" -name __pycache__ -prune -exec rm -rf {} +

if ((with_debs)); then
  step "Debian packages: ${runtime_packages[*]} and what they need beyond a base system"
  # shellcheck disable=SC1091
  [[ -r /etc/os-release ]] && . /etc/os-release
  [[ ${ID:-} == debian && ${VERSION_ID:-} == 12 && $(dpkg --print-architecture) == amd64 ]] ||
    die "the .deb files must come from Debian 12 amd64 (this is ${PRETTY_NAME:-unknown}); use --no-debs"
  # apt resolves the packages as if nothing were installed (first alternatives, no recommends), and so does
  # it for every Priority: required package, which any Debian system has: the difference is bundled.
  resolve() { apt-get install -s -qq --no-install-recommends -o Dir::State::status=/dev/null "$@" | awk '/^Inst /{print $2}' | sort -u; }
  mapfile -t required < <(apt-cache dumpavail | awk '/^Package:/{p=$2} /^Priority: required/{print p}' | sort -u)
  mapfile -t bundle < <(comm -23 <(resolve "${runtime_packages[@]}") <(resolve "${required[@]}"))
  mkdir -p "$stage/debs"
  sandbox=()
  [[ $(id -u) -eq 0 ]] && sandbox=(-o APT::Sandbox::User=root)  # as root apt would drop to _apt, who cannot write here
  (cd "$stage/debs" && apt-get download -qq "${sandbox[@]}" "${bundle[@]}") ||
    die "apt-get download failed: run apt-get update (as root) and build again"
  printf '%s\n' "${runtime_packages[@]}" >"$stage/debs/PACKAGES"
  echo "${#bundle[@]} packages, $(du -sh "$stage/debs" | cut -f1)"
fi

step "install script, README, build info, checksums"
install -m 0755 installer/install_offline.sh "$stage/install.sh"
cp installer/README.md "$stage/README.md"
{
  echo "MedView $version offline installer for Debian 12 amd64 (Python 3.11)"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) from $revision"
  echo "python packages: $(grep -c -- '--hash=' "$stage/requirements.lock") ($torch_wheel)"
  echo "model bundles: $(find "$stage/resources/models" -name manifest.json | wc -l)"
  ((with_debs)) && echo "debian packages: $(ls "$stage/debs"/*.deb | wc -l)"
  true
} >"$stage/BUILD-INFO.txt"
(cd "$stage" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)

step "archive"
artefact="$out/$name.tar.gz"
tar -C "$work" -czf "$artefact.partial" "$name"
mv "$artefact.partial" "$artefact"
(cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "$artefact: $(du -h "$artefact" | cut -f1) (unpacked $(du -sh "$stage" | cut -f1)), built in $((SECONDS - started)) s"
