#!/usr/bin/env bash
# Set up a Debian 12 machine for flex: apt packages, host fixes, a virtualenv with flex, `flex` on PATH.
# Idempotent: run it again at any time; it says what it changed and changes nothing twice.
#
#   installer/install.sh          run-time packages + flex
#   installer/install.sh --dev    also test and benchmark dependencies (registry, PostgreSQL, Chromium, oracles)
#   installer/install.sh --user U let user U run rootless environments (subordinate ids; cgroups on v1 hosts)
#   installer/install.sh --server [--db URL] [--listen HOST:PORT] [--public-url URL] [--tls-cert F --tls-key F]
#                                 the control plane as a service (settings in /etc/flex/server.toml)
#   installer/install.sh --runner URL --token JOIN_TOKEN [--name N] [--label K=V]...
#                                 this machine as a runner of URL, as a service
#   installer/install.sh --desktop [--user U] [--linger]
#                                 a laptop: rootless environments for U, the local daemon ready for flex up
#                                 (--linger: it runs from boot, without a login)
#   installer/install.sh          (again) upgrades in place: every service set up here restarts on the new version
#   installer/install.sh --uninstall [--purge]  remove services and programs; --purge: the data too
# flex goes to /opt/flex/venv (system Python) and /usr/local/bin/flex; see docs/install.md for every path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dev=0
users=()
deploy_args=()
venv=${FLEX_VENV:-$here/.venv}
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --user) [ $# -ge 2 ] || { echo "install.sh: --user needs a user name" >&2; exit 2; }; users+=("$2"); shift ;;
    --user=*) users+=("${1#--user=}") ;;
    # deployments (installer/lib/deploy.sh)
    --server|--desktop|--linger|--uninstall|--purge) deploy_args+=("$1") ;;
    --runner|--token|--name|--label|--db|--listen|--public-url|--tls-cert|--tls-key)
      [ $# -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }; deploy_args+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

# Deployments: options checked (and the machine, for --server/--runner/--desktop) before anything changes.
# shellcheck source=installer/lib/deploy.sh
. "$here/installer/lib/deploy.sh"
# shellcheck source=installer/lib/subids.sh
. "$here/installer/lib/subids.sh"
deploy_parse "${deploy_args[@]}"
if [ "$uninstall" = 1 ]; then
  deploy_uninstall
  exit 0
fi
# `--user U` alone on a machine where flex is installed sets up one more user, nothing else.
users_only=0
[ "${#users[@]}" -gt 0 ] && [ "${#deploy_args[@]}" = 0 ] && [ "$dev" = 0 ] && [ -x "$sysvenv/bin/flex" ] && users_only=1

# golang-github-containers-common: /usr/share/containers/seccomp.json, the seccomp allowlist containers run with
runtime_pkgs=(crun runc uidmap fuse-overlayfs slirp4netns mmdebstrap git zstd iproute2 iptables nftables
              ca-certificates python3-venv tini golang-github-containers-common)
dev_pkgs=(docker-registry apache2-utils postgresql chromium skopeo umoci podman buildah
          util-linux procps psmisc hyperfine wrk restic tmux openssh-server openssh-client systemd)

want=("${runtime_pkgs[@]}")
[ "$dev" = 1 ] && want+=("${dev_pkgs[@]}")
# npm may come with a nodejs from elsewhere, which conflicts with Debian's npm package.
[ "$dev" = 1 ] && ! command -v npm >/dev/null && want+=(npm)
missing=()
[ "$users_only" = 1 ] && want=()
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
[ "$users_only" = 1 ] || "$here/installer/host-setup.sh"

# The development virtualenv in the checkout (the test suite runs from it), editable, with test tools.
if [ "$dev" = 1 ] || [ -n "$sudo" ]; then
  py=${PYTHON:-python3}
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
    changed "virtualenv created at $venv"
  fi
  extra=""
  [ "$dev" = 1 ] && extra="[dev]"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here$extra"
  say "flex installed in $venv"
fi
if [ -n "$sudo" ]; then
  # not root: flex for this user only
  bindir=$HOME/.local/bin && mkdir -p "$bindir"
  if [ "$(readlink -f "$bindir/flex" 2>/dev/null)" != "$venv/bin/flex" ]; then
    ln -sf "$venv/bin/flex" "$bindir/flex"
    changed "linked $bindir/flex -> $venv/bin/flex"
  fi
  venv_for_users=$venv
elif [ "$users_only" = 0 ]; then
  install_system_venv  # /opt/flex/venv on /usr/bin/python3, linked from /usr/local/bin/flex: every user runs it
  venv_for_users=$sysvenv
else
  venv_for_users=$sysvenv
fi

# A subordinate id range for a rootless user: free of every range already handed out in either file (the
# same start in both), so no two users share ids. A range the user already holds is kept.
ensure_subids() {
  local user=$1 f start
  if grep -q "^$user:" /etc/subuid 2>/dev/null && grep -q "^$user:" /etc/subgid 2>/dev/null; then
    return 0
  fi
  start=$(free_subid_start /etc/subuid /etc/subgid)
  for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$user:" "$f" 2>/dev/null; then
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
    $sudo "$venv_for_users/bin/flex" runtime delegate-cgroups "$user" >/dev/null
    say "cgroups delegated to $user (limits and nested Docker in rootless environments)"
  fi
  # again at every boot ($prefix/libexec/flex-boot)
  [ -z "$sudo" ] && remember_user "$user"
done

# The base image of examples/hello, so that a first `flex up` works on a machine with no registry (made once,
# from the apt mirror, with mmdebstrap). As an ordinary user, `flex up` says which command makes it.
# A control plane alone runs no environment: it needs no base image (minutes of mmdebstrap).
base=flex.local/debian:bookworm
server_only=0
[ "${role_server:-0}" = 1 ] && [ -z "${runner_url:-}" ] && [ "${role_desktop:-0}" = 0 ] && [ "$dev" = 0 ] && server_only=1
if [ -z "$sudo" ] && [ "$server_only" = 0 ] && ! "$venv_for_users/bin/flex" image inspect "$base" >/dev/null 2>&1; then
  "$venv_for_users/bin/flex" image bootstrap --quiet "$base" >/dev/null
  changed "base image $base made (flex image bootstrap)"
fi

if [ "$dev" = 1 ]; then
  # The devcontainers reference CLI, used by the tests as an oracle.
  oracle=$here/.cache/devcontainers-cli
  if [ ! -x "$oracle/node_modules/.bin/devcontainer" ]; then
    mkdir -p "$oracle"
    npm install --silent --no-audit --no-fund --prefix "$oracle" @devcontainers/cli >/dev/null
    changed "devcontainers reference CLI installed in $oracle"
  fi
fi
[ -n "$sudo" ] || deploy_apply
say "done"
