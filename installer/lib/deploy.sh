# Deployments: --server, --runner, --desktop, upgrades (run again) and --uninstall [--purge].
# Sourced by install.sh (which has parsed the options into deploy_args and defines say/changed/sudo/here).
# Every path can be moved by an environment variable, so a test installs into temporary places:
#   FLEX_PREFIX (/opt/flex: venv/, libexec/)   FLEX_BIN (/usr/local/bin: the flex command)
#   FLEX_ETC (/etc/flex)  FLEX_STATE (/var/lib/flex)  FLEX_LOG (/var/log/flex)  FLEX_RUN (/run/flex)
#   FLEX_HOME (a runner's home; default FLEX_STATE)   FLEX_SERVER_SERVICE / FLEX_RUNNER_SERVICE (service names)
#   FLEX_INIT (systemd | supervisor; default: systemd when it is PID 1)  FLEX_SYSTEMD_DIR (/etc/systemd/system)
#   FLEX_SYSTEMD_USER_DIR (/etc/systemd/user: the desktop daemon's user unit)  FLEX_SERVER_USER (flex)

prefix=${FLEX_PREFIX:-/opt/flex}
etc=${FLEX_ETC:-/etc/flex}
state=${FLEX_STATE:-/var/lib/flex}
logdir=${FLEX_LOG:-/var/log/flex}
rundir=${FLEX_RUN:-/run/flex}
sysbin=${FLEX_BIN:-/usr/local/bin}
sysvenv=$prefix/venv
server_svc=${FLEX_SERVER_SERVICE:-flex-server}
runner_svc=${FLEX_RUNNER_SERVICE:-flex-runner}
runner_home=${FLEX_HOME:-$state}
systemd_dir=${FLEX_SYSTEMD_DIR:-/etc/systemd/system}
systemd_user_dir=${FLEX_SYSTEMD_USER_DIR:-/etc/systemd/user}
server_user=${FLEX_SERVER_USER:-flex}  # the control plane runs as this system user (no login shell)
installed=$etc/installed  # one line per service set up here: KIND NAME FLEX_HOME (a daemon's: daemon NAME USER)
if [ -n "${FLEX_INIT:-}" ]; then init=$FLEX_INIT
elif [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then init=systemd
else init=supervisor; fi

# One line: what is wrong, and what to do. Undo what this run made first (the machine is left as it was).
fail() { say "error: $*"; exit "${fail_code:-1}"; }
# the last lines of a service's log, under a failure that points at it (the log may go with an undo)
log_tail() { [ -s "$1" ] && tail -n 5 "$1" | sed 's/^/flex-install:   | /' >&2; return 0; }
undo=()
made_user=""  # the server's system user, when this run created it
undo_on_failure() {
  local rc=$? p
  [ "$rc" -eq 0 ] && return 0
  if [ -n "$made_user" ] && userdel "$made_user" 2>/dev/null; then say "undone: removed user $made_user"; fi
  for p in "${undo[@]}"; do
    [ -n "$p" ] && [ -e "$p" -o -L "$p" ] && rm -rf -- "$p" && say "undone: removed $p"
  done
  return "$rc"
}
trap undo_on_failure EXIT

role_server=0 role_desktop=0 linger=0 uninstall=0 purge=0 flex_changed=0
runner_url="" join_token="" runner_name="" labels=() db_url="" listen="" public_url="" tls_cert="" tls_key=""
deploy_parse() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --server) role_server=1 ;;
      --desktop) role_desktop=1 ;;
      --linger) linger=1 ;;
      --uninstall) uninstall=1 ;;
      --purge) purge=1 ;;
      --runner) runner_url=$2; shift ;;
      --token) join_token=$2; shift ;;
      --name) runner_name=$2; shift ;;
      --label) labels+=("$2"); shift ;;
      --db) db_url=$2; shift ;;
      --listen) listen=$2; shift ;;
      --public-url) public_url=$2; shift ;;
      --tls-cert) tls_cert=$2; shift ;;
      --tls-key) tls_key=$2; shift ;;
    esac
    shift
  done
  fail_code=2
  [ "$purge" = 0 ] || [ "$uninstall" = 1 ] || fail "--purge goes with --uninstall (install.sh --uninstall --purge)"
  [ "$linger" = 0 ] || [ "$role_desktop" = 1 ] || fail "--linger goes with --desktop (install.sh --desktop --user NAME --linger)"
  [ -z "$join_token" ] || [ -n "$runner_url" ] || fail "--token goes with --runner URL"
  [ -z "$runner_name" ] || [ -n "$runner_url" ] || fail "--name goes with --runner URL"
  [ "${#labels[@]}" = 0 ] || [ -n "$runner_url" ] || fail "--label goes with --runner URL"
  if [ "$role_server" = 0 ] && [ -n "$db_url$listen$public_url$tls_cert$tls_key" ]; then
    fail "--db, --listen, --public-url, --tls-cert and --tls-key go with --server"
  fi
  local l
  for l in "${labels[@]}"; do
    [[ "$l" == ?*=* ]] || fail "--label '$l': expected KEY=VALUE, e.g. --label zone=eu"
  done
  if [ -n "$runner_url" ]; then
    [[ "$runner_url" =~ ^https?://[^/]+ ]] || fail "--runner '$runner_url' is not an http(s) URL, e.g. --runner http://cp.example:8080"
    [ -f "$runner_home/runner/credential.json" ] || [ -n "$join_token" ] ||
      fail "--runner needs --token JOIN_TOKEN (on the control plane: flex runner join-token)"
  fi
  if [ -n "$listen" ]; then
    [[ "$listen" =~ ^(\[[0-9a-fA-F:]+\]|[^:]+):([0-9]{1,5})$ ]] && [ "${BASH_REMATCH[2]}" -ge 1 ] &&
      [ "${BASH_REMATCH[2]}" -le 65535 ] || fail "--listen '$listen' is not HOST:PORT, e.g. --listen 0.0.0.0:8080"
  fi
  if [ -n "$tls_cert$tls_key" ]; then
    [ -n "$tls_cert" ] && [ -n "$tls_key" ] || fail "--tls-cert and --tls-key go together: give both"
    [ -r "$tls_cert" ] || fail "--tls-cert $tls_cert: no such readable file"
    [ -r "$tls_key" ] || fail "--tls-key $tls_key: no such readable file"
  fi
  if [ -n "$db_url" ]; then
    [[ "$db_url" =~ ^(postgres|postgresql|sqlite)(\+[a-z0-9]+)?:// ]] ||
      fail "--db: not a database URL, e.g. --db postgresql://flex:PASSWORD@db.example/flex"
  fi
  if [ "$role_desktop" = 1 ] && [ "${#users[@]}" = 0 ]; then
    # the person who ran sudo, as a laptop's owner expects
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then users+=("$SUDO_USER")
    else fail "--desktop needs --user NAME: the person who will run flex up"; fi
  fi
  fail_code=1
  if [ "$uninstall" = 0 ] && { [ "$role_server" = 1 ] || [ -n "$runner_url" ] || [ "$role_desktop" = 1 ]; }; then
    [ "$(id -u)" -eq 0 ] || fail "--server, --runner and --desktop set up services: run as root (sudo)"
    check_machine
  fi
  return 0
}

# Before anything changes: a machine flex cannot run on says so in one line.
check_machine() {
  local id="" like="" k
  if [ -r /etc/os-release ]; then
    id=$(. /etc/os-release; echo "${ID:-}"); like=$(. /etc/os-release; echo "${ID_LIKE:-}")
  fi
  case " $id $like " in
    *" debian "*|*" ubuntu "*) ;;
    *) fail "unsupported distribution '${id:-unknown}': the installer needs Debian 12 (or a derivative with apt)" ;;
  esac
  k=$(uname -r)
  local major=${k%%.*} rest=${k#*.}; local minor=${rest%%[!0-9]*}
  if [ "$major" -lt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -lt 12 ]; }; then
    fail "kernel $k is too old: flex needs Linux 5.12 or newer (idmapped mounts, overlayfs in user namespaces)"
  fi
  [ -e /proc/self/ns/user ] || fail "this kernel has no user namespaces (CONFIG_USER_NS): flex's containers need them"
  if [ "$role_server" = 1 ] && [ "$init" = supervisor ] && [ "${listen##*:}" -lt 1024 ] 2>/dev/null &&
     [ "$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)" -gt "${listen##*:}" ]; then
    fail "--listen $listen: the control plane runs as user $server_user, which may not bind ports below 1024 without systemd; listen on 8080 behind a reverse proxy, or lower net.ipv4.ip_unprivileged_port_start"
  fi
  # (a fresh machine may have no Python yet: the apt packages bring it; then the service's start says it)
  if [ "$role_server" = 1 ] && ! grep -qs "^server " "$installed" && [ -x /usr/bin/python3 ]; then
    local hp=${listen:-0.0.0.0:8080}
    /usr/bin/python3 - "$hp" <<'PY' || fail "cannot listen on ${hp}: the port is in use (or the address is not this machine's); pick another with --listen HOST:PORT"
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
host = host.strip("[]") or "0.0.0.0"
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
try:
    s.bind((host, int(port)))
except OSError:
    sys.exit(1)
PY
  fi
  if [ -n "$runner_url" ] && [ ! -x /usr/bin/python3 ]; then
    # no Python yet: a TCP connection to the control plane's port at least (bash's /dev/tcp)
    local hostport=${runner_url#*://}; hostport=${hostport%%/*}
    local h=${hostport%:*} p=${hostport##*:}
    [ "$h" != "$hostport" ] || { case $runner_url in https*) p=443 ;; *) p=80 ;; esac; }
    timeout 10 bash -c "exec 3<>/dev/tcp/$h/$p" 2>/dev/null ||
      fail "cannot reach the control plane at $runner_url (no connection to $h:$p): check the URL, and that its port is open from this machine"
  elif [ -n "$runner_url" ]; then
    local why
    why=$(/usr/bin/python3 - "$runner_url" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/readyz", timeout=10).read()
except Exception as err:  # one line, whatever it is
    print(getattr(err, "reason", None) or err)
    sys.exit(1)
PY
) || fail "cannot reach the control plane at $runner_url ($why): check the URL, and that its port is open from this machine"
  fi
}

# The service manager: systemd where it is PID 1, else flex's own supervisor (flex service ...).
svc_define() {  # KIND NAME HOME (a daemon: daemon NAME USER)
  local kind=$1 name=$2 home=$3 tmpl="$here/installer/units/flex-$1.service"
  if [ "$kind" = daemon ]; then
    daemon_define "$name" "$home"
  elif [ "$init" = systemd ]; then
    mkdir -p "$systemd_dir"
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@VENV@|$sysvenv|g" -e "s|@HOME@|$home|g" -e "s|@ETC@|$etc|g" \
        -e "s|@NAME@|$name|g" -e "s|@USER@|$server_user|g" "$tmpl" > "$systemd_dir/$name.service.new"
    mv "$systemd_dir/$name.service.new" "$systemd_dir/$name.service"
    if [ "$kind" = runner ] && [ ! -e "$systemd_dir/flex-host.service" ]; then
      sed -e "s|@PREFIX@|$prefix|g" "$here/installer/units/flex-host.service" > "$systemd_dir/flex-host.service"
      systemctl daemon-reload && systemctl enable -q flex-host.service
    fi
    systemctl daemon-reload
    systemctl enable -q "$name.service"
  else
    local envs=(--env "FLEX_HOME=$home") cmd=("$sysvenv/bin/flex" server)
    if [ "$kind" = server ]; then
      envs+=(--user "$server_user" --env "FLEX_ETC=$etc" --env "FLEX_SERVER_CONFIG=$etc/server.toml")
    else cmd=("$sysvenv/bin/flex" runner run); fi
    FLEX_ETC=$etc "$sysvenv/bin/flex" service add "$name" "${envs[@]}" -- "${cmd[@]}" 2>/dev/null
  fi
  grep -qs "^$kind $name " "$installed" || { echo "$kind $name $home" >> "$installed"; }
  changed "service $name ($kind) set up with $init"
}
svc() {  # start|stop|restart|remove NAME [KIND USER]
  local verb=$1 name=$2
  if [ "${3:-}" = daemon ]; then
    daemon_svc "$verb" "$name" "$4"
  elif [ "$init" = systemd ]; then
    case $verb in
      remove) systemctl disable -q --now "$name.service" 2>/dev/null || true; rm -f "$systemd_dir/$name.service"
              systemctl daemon-reload ;;
      *) systemctl "$verb" "$name.service" ;;
    esac
  else
    local v=$verb; [ "$v" = remove ] && v=rm
    FLEX_ETC=$etc FLEX_RUN=$rundir FLEX_LOG=$logdir "$sysvenv/bin/flex" service "$v" "$name"
  fi
}

# A person's local daemon (flex daemon run), always as that person, never as root. With systemd: the user unit
# flex-daemon.service, enabled for them alone (what `systemctl --user enable` makes), started by their user
# manager at login (at boot with --linger). Without systemd: with --linger a supervised service run as them,
# started at boot; else nothing runs until their first `flex up` starts the daemon (as Docker Desktop at login).
daemon_define() {  # NAME USER
  local name=$1 u=$2 home wants
  if [ "$init" = systemd ]; then
    home=$(getent passwd "$u" | cut -d: -f6)
    mkdir -p "$systemd_user_dir"
    sed -e "s|@VENV@|$sysvenv|g" "$here/installer/units/flex-daemon.service" > "$systemd_user_dir/flex-daemon.service.new"
    mv "$systemd_user_dir/flex-daemon.service.new" "$systemd_user_dir/flex-daemon.service"
    wants=$home/.config/systemd/user/default.target.wants
    runuser -u "$u" -- mkdir -p "$wants"
    runuser -u "$u" -- ln -sfn "$systemd_user_dir/flex-daemon.service" "$wants/flex-daemon.service"
  else
    FLEX_ETC=$etc "$sysvenv/bin/flex" service add "$name" --user "$u" -- "$sysvenv/bin/flex" daemon run 2>/dev/null
  fi
  grep -qs "^daemon $name " "$installed" || { echo "daemon $name $u" >> "$installed"; }
  changed "service $name (the local daemon of $u, run as $u) set up with $init"
}
daemon_svc() {  # start|stop|restart|remove NAME USER
  local verb=$1 name=$2 u=$3 uctl
  if [ "$init" = systemd ]; then
    uctl=(systemctl --user -M "$u@")  # their user manager, when it runs (a login, or lingering)
    case $verb in
      remove) "${uctl[@]}" stop flex-daemon.service 2>/dev/null || true
              rm -f "$(getent passwd "$u" | cut -d: -f6)/.config/systemd/user/default.target.wants/flex-daemon.service" ;;
      restart) "${uctl[@]}" daemon-reload 2>/dev/null && "${uctl[@]}" restart flex-daemon.service 2>/dev/null || true ;;
      *) "${uctl[@]}" "$verb" flex-daemon.service 2>/dev/null || true ;;
    esac
  else
    local v=$verb; [ "$v" = remove ] && v=rm
    FLEX_ETC=$etc FLEX_RUN=$rundir FLEX_LOG=$logdir "$sysvenv/bin/flex" service "$v" "$name"
  fi
}

# The control plane's own system user: it owns the state, reads its settings, and nothing else.
ensure_server_user() {
  id -u "$server_user" >/dev/null 2>&1 && return 0
  useradd --system --user-group --no-create-home --home-dir "$state" --shell /usr/sbin/nologin \
          --comment "flex control plane" "$server_user"
  made_user=$server_user
  changed "system user $server_user created (no login shell)"
}
# Ownership of what the control plane reads and writes; also fixes an install made by a root-run version.
own_server_state() {
  local sdir
  ensure_server_user
  mkdir -p "$state"
  chown "$server_user:$server_user" "$state"; chmod 0700 "$state"
  sdir=$(sed -n 's/^server_dir = "\(.*\)"$/\1/p' "$etc/server.toml" 2>/dev/null | head -n1); sdir=${sdir:-$state/server}
  mkdir -p "$sdir"
  if [ -n "$(find "$sdir" \! -user "$server_user" -print -quit)" ]; then
    chown -R "$server_user:$server_user" "$sdir"
    changed "$sdir now owned by $server_user"
  fi
  chmod 0700 "$sdir"
  # the database URL may hold a password: root writes it, the control plane reads it, nobody else
  [ -e "$etc/server.toml" ] && chown "root:$server_user" "$etc/server.toml" && chmod 0640 "$etc/server.toml"
  return 0
}

# The checkout's own files (tracked, and new ones not ignored) in a fresh folder: pip builds in the source
# tree, and a build/ left by an earlier install would bring back files since removed (a renamed migration
# gave the control plane two heads).
checkout_copy() {
  local dir; dir=$(mktemp -d "${TMPDIR:-/tmp}/flex-src.XXXXXX"); mkdir "$dir/src"
  if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$here" ls-files -z --cached --others --exclude-standard |
      tar -C "$here" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$dir/src" -xf -
  else
    tar -C "$here" --exclude=./build --exclude='./*.egg-info' --exclude=./.venv --exclude=./.cache -cf - . |
      tar -C "$dir/src" -xf -
  fi
  echo "$dir/src"
}

# flex in a virtualenv every user may run: the system's Python, outside any home directory.
install_system_venv() {
  local src
  if [ ! -x "$sysvenv/bin/python" ]; then
    mkdir -p "$prefix"
    [ -d "$prefix" ] && [ -z "$(ls -A "$prefix")" ] && undo+=("$prefix")
    /usr/bin/python3 -m venv "$sysvenv"
    changed "virtualenv created at $sysvenv (on /usr/bin/python3)"
  fi
  chmod 0755 "$prefix" "$sysvenv"
  local wheel; wheel=$(ls "$here"/wheels/flex-*.whl 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$wheel" ]; then src=$wheel                       # from a release tarball
  elif [ "$dev" = 1 ]; then src="-e $here"                   # a development machine: the checkout, live
  else src=$(checkout_copy); fi                              # a checkout, copied
  local want have
  if [ -n "$wheel" ]; then want=$(basename "$wheel" | cut -d- -f2)
  else want=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/pyproject.toml" | head -n1); fi
  have=$("$sysvenv/bin/flex" --version 2>/dev/null | cut -d' ' -f2 || true)
  if [ "$dev" = 0 ] && [ -n "$have" ] && [ "$have" = "$want" ] && [ -z "${FLEX_REINSTALL:-}" ]; then
    say "flex $have is installed in $sysvenv (FLEX_REINSTALL=1 installs it again)"
  else
    # --upgrade of flex alone: its dependencies stay unless the new version needs newer ones
    # shellcheck disable=SC2086
    "$sysvenv/bin/python" -m pip install -q --disable-pip-version-check --upgrade --upgrade-strategy only-if-needed $src
    local now; now=$("$sysvenv/bin/flex" --version | cut -d' ' -f2)
    [ "$now" != "$have" ] && flex_changed=1
    case $src in "${TMPDIR:-/tmp}"/flex-src.*) rm -rf "${src%/src}" ;; esac
    say "flex $now installed in $sysvenv"
  fi
  mkdir -p "$prefix/libexec"
  cp "$here/installer/host-setup.sh" "$prefix/libexec/host-setup.sh"
  write_boot_script
  mkdir -p "$sysbin"
  if [ "$(readlink "$sysbin/flex" 2>/dev/null)" != "$sysvenv/bin/flex" ]; then
    [ -e "$sysbin/flex" ] || [ -L "$sysbin/flex" ] || undo+=("$sysbin/flex")
    ln -sfn "$sysvenv/bin/flex" "$sysbin/flex"
    changed "linked $sysbin/flex -> $sysvenv/bin/flex"
  fi
}

# What must happen again after a reboot: host fixes, cgroup delegation (v1/hybrid), and without systemd the
# services. systemd runs it from flex-host.service; elsewhere /etc/rc.local (when the host has one) does.
write_boot_script() {
  cat > "$prefix/libexec/flex-boot.new" <<SH
#!/bin/sh
# Written by flex's installer: run at boot (flex-host.service, or /etc/rc.local). Safe to repeat.
"$prefix/libexec/host-setup.sh"
if [ "\$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && [ -r "$etc/users" ]; then
  while read -r user; do [ -n "\$user" ] && FLEX_HOME=/run/flex-delegate "$sysvenv/bin/flex" runtime delegate-cgroups "\$user" >/dev/null; done < "$etc/users"
fi
[ "$init" = supervisor ] && FLEX_ETC="$etc" FLEX_RUN="$rundir" FLEX_LOG="$logdir" "$sysvenv/bin/flex" service start --all
exit 0
SH
  chmod 0755 "$prefix/libexec/flex-boot.new"
  mv "$prefix/libexec/flex-boot.new" "$prefix/libexec/flex-boot"
}

remember_user() {
  mkdir -p "$etc"
  grep -qsx "$1" "$etc/users" || { echo "$1" >> "$etc/users"; changed "$1 recorded in $etc/users (delegation again after a reboot)"; }
}

wait_ready() {  # URL SECONDS
  "$sysvenv/bin/python" - "$1" "$2" <<'PY'
import ssl, sys, time, urllib.request
url, limit = sys.argv[1].rstrip("/") + "/readyz", float(sys.argv[2])
ctx = ssl._create_unverified_context()  # our own server on this machine, maybe with a not-yet-trusted cert
deadline = time.monotonic() + limit
while True:
    try:
        urllib.request.urlopen(url, timeout=5, context=ctx).read()
        sys.exit(0)
    except Exception as err:
        if time.monotonic() > deadline:
            print(getattr(err, "reason", None) or err)
            sys.exit(1)
        time.sleep(0.2)
PY
}

toml_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

setup_server() {
  local hp=${listen:-0.0.0.0:8080} port scheme=http host
  port=${hp##*:}
  [ -n "$tls_cert" ] && scheme=https
  if [ -z "$public_url" ]; then
    host=${hp%:*}
    case $host in 0.0.0.0|"[::]"|"") host=$(hostname -I 2>/dev/null | awk '{print $1}'); host=${host:-127.0.0.1} ;; esac
    public_url="$scheme://$host:$port"
  fi
  # A database that refuses is one line now, before any service is set up.
  if [ -n "$db_url" ] && [[ "$db_url" == postgres* ]]; then
    local why
    why=$("$sysvenv/bin/python" - "$db_url" <<'PY'
import sys, psycopg
url = sys.argv[1].replace("postgresql+psycopg://", "postgresql://")
try:
    psycopg.connect(url, connect_timeout=10).close()
except Exception as err:
    print(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    sys.exit(1)
PY
) || fail "the database refuses: $why (check --db, and that PostgreSQL accepts this host and user)"
  fi
  mkdir -p "$etc" "$state"
  chmod 0755 "$etc"
  ensure_server_user
  local f
  for f in "$tls_cert" "$tls_key"; do
    [ -z "$f" ] || runuser -u "$server_user" -- test -r "$f" ||
      fail "$f is not readable by user $server_user, which the control plane runs as: chgrp $server_user $f && chmod g+r $f"
  done
  local conf=$etc/server.toml
  if [ ! -e "$conf" ] || [ -n "$db_url$listen$public_url$tls_cert$tls_key" ]; then
    {
      echo "# flex control plane settings (docs/install.md). Every key is also FLEX_SERVER_<KEY> in the environment."
      echo "# Written by installer/install.sh --server; edit freely, then restart the service."
      echo "server_dir = $(toml_str "$state/server")"
      echo "listen = $(toml_str "$hp")"
      echo "public_url = $(toml_str "$public_url")"
      [ -n "$db_url" ] && echo "db_url = $(toml_str "$db_url")"
      [ -n "$tls_cert" ] && echo "tls_cert_file = $(toml_str "$(readlink -f "$tls_cert")")"
      [ -n "$tls_key" ] && echo "tls_key_file = $(toml_str "$(readlink -f "$tls_key")")"
      if [ -e "$conf" ]; then grep -E '^(proxy_trusted_origins|heartbeat_timeout|join_token_ttl|pool_size) *=' "$conf" || true; fi
    } > "$conf.new"
    chown "root:$server_user" "$conf.new"; chmod 0640 "$conf.new"  # the database URL may hold a password
    mv "$conf.new" "$conf"
    changed "$conf written"
  fi
  own_server_state
  svc_define server "$server_svc" "$state"
  svc restart "$server_svc" >/dev/null 2>&1 || svc start "$server_svc"
  local local_url="$scheme://127.0.0.1:$port" why
  case ${hp%:*} in 0.0.0.0|"[::]"|"") ;; *) local_url="$scheme://${hp%:*}:$port" ;; esac
  why=$(wait_ready "$local_url" 90) || { log_tail "${logdir}/$server_svc.log"
    fail "the control plane did not become ready ($why): see ${logdir}/$server_svc.log"; }
  local token_file=$state/server/admin-token
  say "control plane ready at $public_url"
  made_user=""  # ready: the user stays
  say "admin token: $token_file (root and $server_user only; flex login $public_url --token \"\$(cat $token_file)\")"
  local jt
  jt=$(FLEX_HOME=/nonexistent "$sysvenv/bin/flex" runner join-token --server "$local_url" --token "$(cat "$token_file")" 2>/dev/null) || jt=""
  if [ -n "$jt" ]; then
    say "join a runner (this token is single use, valid for an hour):"
    printf '  %s --runner %s --token %s\n' "$installer_cmd" "$public_url" "$jt" >&2
  fi
  say "more join tokens: flex runner join-token --server $public_url --token \"\$(cat $token_file)\""
}

setup_runner() {
  local cred=$runner_home/runner/credential.json
  mkdir -p "$runner_home"
  if [ ! -e "$cred" ]; then
    [ -d "$runner_home" ] && [ -z "$(ls -A "$runner_home")" ] && undo+=("$runner_home")
    local args=(runner join "$runner_url" --token "$join_token")
    [ -n "$runner_name" ] && args+=(--name "$runner_name")
    local l; for l in "${labels[@]}"; do args+=(--label "$l"); done
    local out
    out=$(FLEX_HOME=$runner_home "$sysvenv/bin/flex" "${args[@]}" 2>&1 >/dev/null) ||
      fail "joining $runner_url failed: $(printf '%s' "$out" | sed 's/^error: //' | paste -sd' ' -)"
    changed "joined $runner_url (credential in $cred)"
  else
    say "already joined ($cred); keeping that identity"
  fi
  undo=()  # joined: from here on an error leaves a runner to fix, not a machine to restore
  svc_define runner "$runner_svc" "$runner_home"
  svc restart "$runner_svc" >/dev/null 2>&1 || svc start "$runner_svc"
  say "runner service $runner_svc running (FLEX_HOME=$runner_home); environments outlive its restarts"
}

setup_desktop() {
  local u how
  for u in "${users[@]}"; do
    remember_user "$u"
    if [ "$init" = systemd ]; then
      daemon_define "flex-daemon-$u" "$u"
      if [ "$linger" = 1 ]; then
        loginctl enable-linger "$u" && changed "lingering on for $u: their user manager, and the daemon, run from boot"
      fi
      daemon_svc restart "flex-daemon-$u" "$u"  # now, when their user manager runs
      how="the systemd user unit flex-daemon.service, started at $u's login$([ "$linger" = 1 ] && echo " and at boot")"
    elif [ "$linger" = 1 ]; then
      daemon_define "flex-daemon-$u" "$u"
      daemon_svc restart "flex-daemon-$u" "$u" >/dev/null 2>&1 || daemon_svc start "flex-daemon-$u" "$u"
      how="service flex-daemon-$u, run as $u from boot (flex service status flex-daemon-$u)"
    else
      how="started by $u's first flex up"
    fi
    say "desktop ready for $u: the local daemon is $how"
  done
  say "next, as ${users[*]}: flex up PATH   (a folder with a .devcontainer/devcontainer.json, e.g. $here/examples/hello)"
}

# Running the installer again: every service set up here restarts on the new version (the server's
# migrations run as it starts; a runner's environments keep running).
upgrade_services() {
  [ -r "$installed" ] || return 0
  # Setting up one more role on an unchanged flex restarts nothing (a runner joining this machine's server
  # must not race that server's restart); a plain run again, or a new version, restarts everything.
  if [ "$flex_changed" = 0 ] && { [ "$role_server" = 1 ] || [ -n "$runner_url" ] || [ "$role_desktop" = 1 ]; }; then
    return 0
  fi
  local kind name home
  while read -r kind name home <&3; do
    [ -n "$name" ] || continue
    [ "$kind" = server ] && [ "$role_server" = 1 ] && continue
    [ "$kind" = runner ] && [ -n "$runner_url" ] && [ "$name" = "$runner_svc" ] && continue
    [ "$kind" = daemon ] && [ "$role_desktop" = 1 ] && continue
    [ "$kind" = server ] && own_server_state
    svc_define "$kind" "$name" "$home" >/dev/null 2>&1
    svc restart "$name" "$kind" "$home" >/dev/null 2>&1 || svc start "$name" "$kind" "$home"
    if [ "$kind" = server ]; then  # its migrations run as it starts: ready means migrated
      local hp why
      hp=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$etc/server.toml" 2>/dev/null | head -n1); hp=${hp:-127.0.0.1:8080}
      case ${hp%:*} in 0.0.0.0|"[::]"|"") hp=127.0.0.1:${hp##*:} ;; esac
      local scheme=http; grep -qs '^tls_cert_file' "$etc/server.toml" && scheme=https
      why=$(wait_ready "$scheme://$hp" 120) || { log_tail "$logdir/$name.log"
        fail "$name did not become ready on the new version ($why): see $logdir/$name.log"; }
    fi
    changed "service $name restarted on flex $("$sysvenv/bin/flex" --version | cut -d' ' -f2)"
  done 3< "$installed"
}

deploy_apply() {
  installer_cmd=${FLEX_INSTALLER_CMD:-"sudo $here/installer/install.sh"}
  if [ "$role_server" = 1 ] || [ -n "$runner_url" ] || [ "$role_desktop" = 1 ]; then mkdir -p "$etc"; fi
  upgrade_services
  [ "$role_server" = 1 ] && setup_server
  [ -n "$runner_url" ] && setup_runner
  [ "$role_desktop" = 1 ] && setup_desktop
  undo=()
  return 0
}

# --uninstall: services and programs go, data stays. --purge: the data too, after saying what exactly.
deploy_uninstall() {
  local kind name home homes=()
  # $etc/uninstalled remembers what --uninstall removed, so a later --purge still finds the runners' homes
  if [ -r "$etc/uninstalled" ]; then
    while read -r kind name home; do [ "$kind" = runner ] && homes+=("$home"); done < "$etc/uninstalled"
  fi
  if [ -r "$installed" ]; then
    while read -r kind name home <&3; do
      [ -n "$name" ] || continue
      [ "$kind" = runner ] && homes+=("$home")
      if [ -x "$sysvenv/bin/flex" ] || [ "$init" = systemd ]; then svc remove "$name" "$kind" "$home" >/dev/null 2>&1 || true; fi
      changed "service $name removed"
    done 3< "$installed"
  fi
  [ "$init" = systemd ] && [ -e "$systemd_dir/flex-host.service" ] && { systemctl disable -q flex-host.service 2>/dev/null || true; rm -f "$systemd_dir/flex-host.service"; }
  [ "$init" = systemd ] && rm -f "$systemd_user_dir/flex-daemon.service"
  if [ "$purge" = 1 ]; then
    local what=() h
    for h in "$state" "${homes[@]}"; do [ -e "$h" ] && [[ " ${what[*]} " != *" $h "* ]] && what+=("$h"); done
    for h in "$etc" "$logdir"; do [ -e "$h" ] && what+=("$h"); done
    # Environments still on this machine go first: their mounts live below the runner's home.
    for h in "${homes[@]}"; do
      if [ -x "$sysvenv/bin/flex" ] && [ -d "$h" ]; then
        local ids; ids=$(FLEX_HOME=$h "$sysvenv/bin/flex" runtime ps -a -q 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -n "$ids" ] && FLEX_HOME=$h "$sysvenv/bin/flex" runtime rm -f $ids >/dev/null 2>&1 && changed "environments' containers removed from $h"
      fi
    done
    local who=""; id -u "$server_user" >/dev/null 2>&1 && who=" and the system user $server_user"
    say "purging (data of the control plane and runners, settings, logs): ${what[*]:-nothing}$who"
    for h in "${what[@]}"; do rm -rf -- "$h"; changed "removed $h"; done
    [ -z "$who" ] || { userdel "$server_user" && changed "removed user $server_user"; }
  else
    [ -r "$installed" ] && cat "$installed" >> "$etc/uninstalled"
    rm -rf -- "$etc/services" "$installed"
  fi
  if [ "$(readlink "$sysbin/flex" 2>/dev/null)" = "$sysvenv/bin/flex" ]; then rm -f "$sysbin/flex"; changed "removed $sysbin/flex"; fi
  if [ -e "$prefix" ]; then rm -rf -- "$prefix"; changed "removed $prefix (programs)"; fi
  rm -rf -- "$rundir"
  if [ "$purge" = 0 ]; then
    local kept=(); for h in "$state" "${homes[@]}" "$etc" "$logdir"; do [ -e "$h" ] && [[ " ${kept[*]} " != *" $h "* ]] && kept+=("$h"); done
    say "kept the data: ${kept[*]:-none} (install.sh --uninstall --purge removes it)"
  fi
  trap - EXIT
}
