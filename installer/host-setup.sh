#!/usr/bin/env bash
# Host fixes flex needs; each is detected first and reported when made. Safe to repeat.
set -euo pipefail
say() { printf 'flex-install: %s\n' "$*" >&2; }
changed() { printf 'flex-install: changed: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "host set-up skipped (not root): run installer as root to apply host fixes"; exit 0; }

# crun refuses to run while cgroup2 holds any controller in hybrid mode ("drop all controllers from
# cgroupv2"). Move each such controller to its own v1 mount. A pure v2 machine is left alone.
if [ "$(stat -fc %T /sys/fs/cgroup)" != "cgroup2fs" ]; then
  v2=$(awk '$3=="cgroup2"{print $2; exit}' /proc/mounts)
  if [ -n "$v2" ] && [ -n "$(cat "$v2/cgroup.controllers" 2>/dev/null)" ]; then  # cgroupfs files report size 0: no -s
    for c in $(cat "$v2/cgroup.controllers"); do
      mkdir -p "/sys/fs/cgroup/$c"
      if mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" 2>/dev/null; then
        changed "cgroup controller '$c' moved from cgroup2 ($v2) to a v1 mount at /sys/fs/cgroup/$c"
      else
        say "warning: could not move cgroup controller '$c' off cgroup2; crun may refuse to run"
      fi
    done
  fi
fi

# Without udev these are 0600 root; rootless runners need them (a normal distribution makes them 0666).
for dev in /dev/net/tun /dev/fuse; do
  if [ ! -e "$dev" ]; then
    case $dev in
      /dev/net/tun) mkdir -p /dev/net; mknod -m 0666 /dev/net/tun c 10 200 ;;
      /dev/fuse) mknod -m 0666 /dev/fuse c 10 229 ;;
    esac
    changed "created $dev (0666)"
  elif [ "$(stat -c %a "$dev")" != "666" ]; then
    chmod 0666 "$dev"
    changed "$dev made usable by unprivileged users (0666, as udev does)"
  fi
done

# Overlay and user namespaces.
modprobe overlay 2>/dev/null || true
if [ -r /proc/sys/user/max_user_namespaces ] && [ "$(cat /proc/sys/user/max_user_namespaces)" = 0 ]; then
  echo 15000 > /proc/sys/user/max_user_namespaces
  changed "user namespaces enabled (user.max_user_namespaces=15000)"
fi
if [ -r /proc/sys/kernel/unprivileged_userns_clone ] && [ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" = 0 ]; then
  echo 1 > /proc/sys/kernel/unprivileged_userns_clone
  changed "unprivileged user namespaces enabled"
fi
# Outbound NAT for root-runner environments.
if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
  echo 1 > /proc/sys/net/ipv4/ip_forward
  changed "net.ipv4.ip_forward=1 (outbound traffic of environments)"
fi
