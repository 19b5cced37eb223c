#!/usr/bin/env bash
# Prove the offline installer: install an artefact with no network at all and run MedView's self-test there.
#
#   bash installer/verify_offline.sh [ARTEFACT.tar.gz] [--recording FILE.wav] [--keep]
#
# Without ARTEFACT it first builds one (installer/build_offline.sh, into dist/). Then, in a new network
# namespace (unshare --net: a loopback interface that is down, no other interface, no route; as root, or
# with --map-root-user where unprivileged user namespaces are allowed), it:
#   1. shows that the internet cannot be reached from there;
#   2. unpacks the artefact into a fresh temporary folder and runs its install.sh into another one, with
#      --no-integration (no link on the PATH, no menu entry: nothing outside the temporary folder changes);
#   3. runs `medview --self-test` twice in a clean environment (env -i) with a fresh HOME and
#      QT_QPA_PLATFORM=offscreen: first as right after an install (empty caches), then again (warm, and held
#      open 20 s after the models ran, to catch background uploads on a timer such as onnxruntime's telemetry);
#      each run under strace, which logs every socket(), connect(), sendto() and sendmsg() of the process and
#      its threads; a call with an internet address family counts as a network attempt.
# It prints the artefact size, unpack and install time, installed size, time-to-window, every self-test step
# and the network attempts, and exits non-zero if the install or a self-test failed or anything tried the
# network. The recording is --recording, else the smallest ICBHI recording of the shared data when present.
# Needs a few GB in TMPDIR for a moment; --keep leaves the temporary folder there.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared_recording="$repo/../shared/data/lung_sound/icbhi_sample/104_1b1_Lr_sc_Litt3200.wav"

# ------------------------------------------------------------------ inside the network namespace
if [[ ${1:-} == --inside ]]; then
  work="$2" artefact="$3" recording="$4" system_packages="$5"
  failed=0
  hold_s=20  # the second run stays open this long: onnxruntime's telemetry, when on, tries to upload after ~10 s
  elapsed() { awk -v began="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f", now - began }'; }
  echo "== network in the namespace"
  (ip -brief link 2>/dev/null || tail -n +3 /proc/net/dev) | sed 's/^/   /'
  echo "   routes: $(tail -n +2 /proc/net/route | wc -l) (IPv4), $(wc -l </proc/net/ipv6_route 2>/dev/null || echo 0) (IPv6)"
  /usr/bin/python3 - <<'PY'
import socket
try:
    socket.create_connection(("pypi.org", 443), timeout=5)
    print("   pypi.org:443 REACHABLE")
except OSError as error:
    print(f"   pypi.org:443 unreachable ({error})")
PY

  echo "== unpack"
  began=$(date +%s.%N)
  mkdir -p "$work/artefact"
  tar -xzf "$artefact" -C "$work/artefact"
  unpack_s=$(elapsed "$began")
  source_dir="$(ls -d "$work"/artefact/medview-offline-*)"

  echo "== install"
  options=(--no-integration)
  ((system_packages)) || options+=(--no-system-packages)
  began=$(date +%s.%N)
  bash "$source_dir/install.sh" "${options[@]}" "$work/app"
  install_s=$(elapsed "$began")
  installed_bytes=$(du -sb "$work/app" | cut -f1)
  site_packages="$(ls -d "$work"/app/venv/lib/python3.11/site-packages)"
  unwanted="$(ls "$site_packages" | grep -iE '^(librosa|numba|llvmlite|nvidia|triton)' || true)"
  [[ -z $unwanted ]] || { echo "UNEXPECTED packages installed: $unwanted"; failed=1; }

  tracer=()
  if command -v strace >/dev/null; then
    tracer=(strace -f -qq --seccomp-bpf -e trace=socket,connect,sendto,sendmsg)
  else
    echo "   (strace not installed: only the self-test's own network watch runs)"
  fi
  recording_args=()
  [[ -n $recording ]] && recording_args=(--self-test-recording "$recording")
  mkdir -p "$work/home"
  declare -A wall
  for run in cold warm; do
    echo "== self-test ($run)"
    trace=("${tracer[@]}")
    ((${#trace[@]})) && trace+=(-o "$work/strace-$run.log")
    began=$(date +%s.%N)
    status=0
    hold=()
    [[ $run == warm ]] && hold=(--self-test-hold "$hold_s")
    env -i HOME="$work/home" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
      "${trace[@]}" "$work/app/bin/medview" --self-test "${recording_args[@]}" "${hold[@]}" \
      >"$work/selftest-$run.txt" 2>"$work/selftest-$run.err" || status=$?
    wall[$run]=$(elapsed "$began")
    sed 's/^/   /' "$work/selftest-$run.txt"
    if ((status)); then
      echo "   exit code $status; stderr:"; grep -v '^INFO' "$work/selftest-$run.err" | tail -20 | sed 's/^/   /'
      failed=1
    fi
    if [[ -f $work/strace-$run.log ]]; then
      attempts="$(grep -E 'AF_INET|PF_INET' "$work/strace-$run.log" || true)"
      echo "   strace: $(grep -c . "$work/strace-$run.log") socket calls, $(grep -c . <<<"$attempts") with an internet address family"
      if [[ -n $attempts ]]; then
        sed 's/^/     /' <<<"$attempts" | head -10
        failed=1
      fi
    fi
  done

  ttw() { sed -n 's/.*time to window \([0-9.]*\) s.*/\1/p' "$work/selftest-$1.txt"; }
  echo
  echo "== summary"
  printf '   artefact          %s (%s bytes)\n' "$(du -h "$artefact" | cut -f1)" "$(stat -c %s "$artefact")"
  printf '   unpack            %.1f s\n' "$unpack_s"
  printf '   install           %.1f s (checksums, Python environment, resources)\n' "$install_s"
  printf '   installed size    %s (%s bytes)\n' "$(du -sh "$work/app" | cut -f1)" "$installed_bytes"
  printf '   time to window    %s s first run after install, %s s next run\n' "$(ttw cold)" "$(ttw warm)"
  printf '   self-test wall    %.1f s first run, %.1f s next run (held open %s s)\n' "${wall[cold]}" "${wall[warm]}" "$hold_s"
  exit $failed
fi

# ------------------------------------------------------------------ outside: build or take the artefact, enter
artefact="" recording="" keep=0
while (($#)); do
  case "$1" in
    --recording) recording="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -*) echo "usage: bash installer/verify_offline.sh [ARTEFACT.tar.gz] [--recording FILE.wav] [--keep]" >&2; exit 2 ;;
    *) artefact="$(realpath "$1")"; shift ;;
  esac
done
if [[ -z $recording && -f $shared_recording ]]; then
  recording="$(realpath "$shared_recording")"
fi
[[ -z $recording || -f $recording ]] || { echo "no recording at $recording" >&2; exit 2; }

if [[ -z $artefact ]]; then
  bash "$repo/installer/build_offline.sh" --out "$repo/dist"
  version="$(cd "$repo" && python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
  artefact="$repo/dist/medview-offline-$version-linux-x86_64.tar.gz"
fi
[[ -f $artefact ]] || { echo "no artefact at $artefact" >&2; exit 2; }
if [[ -f $artefact.sha256 ]]; then
  (cd "$(dirname "$artefact")" && sha256sum --quiet -c "$(basename "$artefact").sha256") || { echo "artefact checksum mismatch" >&2; exit 1; }
fi

if [[ $(id -u) -eq 0 ]]; then
  namespace=(unshare --net) system_packages=1
else
  namespace=(unshare --net --map-root-user) system_packages=0  # a mapped root cannot install Debian packages
fi
"${namespace[@]}" true 2>/dev/null || { echo "cannot create a network namespace here (${namespace[*]}): run as root" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/medview-verify.XXXXXX")"
if ((keep)); then echo "(keeping $work)"; else trap 'rm -rf "$work"' EXIT; fi
# the recording is copied in, so the installed app reads nothing outside the temporary folder but the system
if [[ -n $recording ]]; then
  mkdir -p "$work/recording"
  cp "$recording" "${recording%.*}.txt" "$work/recording/" 2>/dev/null || cp "$recording" "$work/recording/"
  recording="$work/recording/$(basename "$recording")"
fi
"${namespace[@]}" bash "${BASH_SOURCE[0]}" --inside "$work" "$artefact" "$recording" "$system_packages"
