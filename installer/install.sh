#!/usr/bin/env bash
# Set up a Debian 12 machine for flex: apt packages, host fixes, a virtualenv with flex, `flex` on PATH.
# Idempotent: run it again at any time; it says what it changed and changes nothing twice.
#
#   installer/install.sh          run-time packages + flex
#   installer/install.sh --dev    also test and benchmark dependencies (registry, PostgreSQL, Chromium, oracles)
#   installer/install.sh --user U let user U run rootless environments (subordinate ids; cgroups on v1 hosts)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dev=0
users=()
venv=${FLEX_VENV:-$here/.venv}
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --user) [ $# -ge 2 ] || { echo "install.sh: --user needs a user name" >&2; exit 2; }; users+=("$2"); shift ;;
    --user=*) users+=("${1#--user=}") ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'flex-install: %s\n' "$*" >&2; }
changed() { printf 'flex-install: changed: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { say "run as root (or install sudo): apt packages and host fixes need it"; exit 1; }
else
  sudo=
fi

# golang-github-containers-common: /usr/share/containers/seccomp.json, the seccomp allowlist containers run with
runtime_pkgs=(crun runc uidmap fuse-overlayfs slirp4netns mmdebstrap git zstd iproute2 iptables nftables
              ca-certificates python3-venv tini golang-github-containers-common)
dev_pkgs=(docker-registry apache2-utils postgresql chromium skopeo umoci podman buildah
          util-linux procps psmisc hyperfine wrk)

want=("${runtime_pkgs[@]}")
[ "$dev" = 1 ] && want+=("${dev_pkgs[@]}")
# npm may come with a nodejs from elsewhere, which conflicts with Debian's npm package.
[ "$dev" = 1 ] && ! command -v npm >/dev/null && want+=(npm)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # Services shipped by these packages (registry, postgresql) are started by the tests on loopback
  # with their own config, never by the package's init scripts.
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $sudo rm -f /usr/sbin/policy-rc.d
  changed "apt packages installed: ${missing[*]}"
fi

# Host fixes. Each is checked first, so a normal laptop is left alone.
"$here/installer/host-setup.sh"

# Virtualenv with flex.
py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  changed "virtualenv created at $venv"
fi
extra=""
[ "$dev" = 1 ] && extra="[dev]"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here$extra"
say "flex installed in $venv"

bindir=/usr/local/bin
[ -n "$sudo" ] && bindir=$HOME/.local/bin && mkdir -p "$bindir"
if [ "$(readlink -f "$bindir/flex" 2>/dev/null)" != "$venv/bin/flex" ]; then
  ln -sf "$venv/bin/flex" "$bindir/flex"
  changed "linked $bindir/flex -> $venv/bin/flex"
fi

# A subordinate id range for a rootless user: past every range already handed out, so no two users share ids.
ensure_subids() {
  local user=$1 f start
  for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$user:" "$f" 2>/dev/null; then
      start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f" 2>/dev/null || echo 100000)
      echo "$user:$start:65536" | $sudo tee -a "$f" >/dev/null
      changed "$f: $user given ids $start..$((start + 65535))"
    fi
  done
}

# The test user of the rootless tests.
if [ "$dev" = 1 ] && [ -z "$sudo" ] && ! id flextest >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash flextest
  changed "test user 'flextest' created"
fi
[ "$dev" = 1 ] && [ -z "$sudo" ] && users+=(flextest)

for user in "${users[@]}"; do
  id "$user" >/dev/null 2>&1 || { say "no such user: $user"; exit 3; }
  ensure_subids "$user"
  # cgroup v1 (or hybrid) hosts have no systemd delegation: give the user a cgroup subtree of its own.
  if [ "$(stat -fc %T /sys/fs/cgroup)" != "cgroup2fs" ]; then
    $sudo "$venv/bin/flex" runtime delegate-cgroups "$user" >/dev/null
    say "cgroups delegated to $user (limits and nested Docker in rootless environments)"
  fi
done

if [ "$dev" = 1 ]; then
  # The devcontainers reference CLI, used by the tests as an oracle.
  oracle=$here/.cache/devcontainers-cli
  if [ ! -x "$oracle/node_modules/.bin/devcontainer" ]; then
    mkdir -p "$oracle"
    npm install --silent --no-audit --no-fund --prefix "$oracle" @devcontainers/cli >/dev/null
    changed "devcontainers reference CLI installed in $oracle"
  fi
fi
say "done"
