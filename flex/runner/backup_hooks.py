"""Reconcile's backup and restore steps (issue 17): make the backup ``spec.backup.request`` names, and start an
environment with ``spec.restoreFrom`` from its backup instead of a fresh clone.

The repository is the runner's ``FLEX_HOME/backups/`` unless ``FLEX_BACKUP_REPO`` (a directory, or
``s3:http[s]://HOST/BUCKET[/PREFIX]`` with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the runner's environment)
names another; its password is ``FLEX_HOME/backup.key`` (made owner-only with a random password on first use).
Neither the location's credentials nor the password reach a spec, a status or a log line.

Level-triggered and safe to cut anywhere: a backup is reported to the control plane (its row) before
``status.lastBackup`` says so, and the row is read first, so a runner killed between the two does not back
up twice (``BackedUp`` is set from the row then). Retention (keepLast, prune) is not part of the backup: a
marker says it is due, and reconcile runs it once the environment is where its spec wants it (stopped, or
Ready), so a start that arrives while a stop's backup runs waits for the snapshot only (issue 14).
A restore goes to FLEX_HOME/runner/tmp/, its workspace is renamed into place whole and a marker
written after; the writable layer waits in the state directory until the container is made, then is
renamed into the container's upper dir before the container first starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flex.api import BackupReport, Environment, EnvironmentStatus, LastBackup, set_condition
from flex.api.backup_spec import KEEP_LAST
from flex.atomic import write_atomic
from flex.client import FlexClient
from flex.errors import FailedPrecondition, FlexError, NotFound
from flex.runner.backups import run_worker
from flex.runner.disk_image import mount_disk_image
from flex.runner.machine import Machine
from flex.runner.moves import shared
from flex.runner.owner_maps import MAP_FILE, ids_for, record_map, shift_copy
from flex.runner.storage import EnvPaths, remove_tree
from flex.runtime.containers.rootfs import replace_upper
from flex.runtime.containers.store import Container

__all__ = ["RESTORED_MARKER", "RETAIN_MARKER", "back_up_before_delete", "back_up_if_asked", "forget_expired",
           "place_restored_upper", "repository", "restore_if_asked", "retain_if_due", "retention_due",
           "worker_prefix"]

log = logging.getLogger("flex.runner")
RESTORED_MARKER = "restored.json"
RETAIN_MARKER = "retain.json"  # a backup was made: retention is due (state/<id>/)
_UPPER = "restore-upper"
# retention waits this long for a repository another job holds, then leaves it to the next reconcile: the
# environment's reconciles queue behind it, and a start must not wait minutes for a prune
RETAIN_LOCK_WAIT = 60.0


def repository(home: Path) -> tuple[str, Path, dict[str, str]]:
    """(the repository location, the password file, the store's credentials) this runner uses: FLEX_BACKUP_REPO,
    else the control plane's shared repository (issue 17.5), else FLEX_HOME/backups."""
    given = shared(home)
    if given is not None:
        return given
    key = home / "backup.key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(key, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return os.environ.get("FLEX_BACKUP_REPO") or str(home / "backups"), key, {}


def worker_prefix(machine: Machine) -> list[str]:
    """Rootless: the backup worker runs as root in the runtime keeper's user namespace (0 → the user, 1.. → its
    subordinate ids), where it reads every file of an environment, sees owners as the environment does (stored
    with offset 0: uid 1000 stays 1000 on any runner) and may set them on restore. Root: nothing."""
    keeper = machine.containers.keeper
    return keeper.prefix() if keeper is not None and os.geteuid() != 0 else []


def _which(home: Path) -> str:
    return "shared" if shared(home) is not None else "own"


def _condition(status: EnvironmentStatus, type_: str, value: bool | None, reason: str, message: str,
               generation: int) -> None:
    set_condition(status, type_, value, reason=reason, message=message[:4096], generation=generation)


def back_up_if_asked(client: FlexClient, home: Path, machine: Machine, env: Environment, status: EnvironmentStatus,
                     flush: Any) -> None:
    """Make the backup ``spec.backup.request`` names, once; ``flush()`` writes ``status``."""
    want = env.spec.backup.request if env.spec.backup is not None else None
    last = status.last_backup
    if want is None or (last is not None and last.id == want and last.state in ("completed", "failed")):
        return
    meta, gen = env.metadata, env.metadata.generation
    try:
        row = client.runner_backup(meta.id, want)
    except NotFound:
        return  # removed before it was made: nothing is owed
    if row.state in ("completed", "failed"):  # made before a restart (or a lost status write) cut us short
        status.last_backup = LastBackup(id=want, time=row.completed_at, size=row.size, files=row.files,
                                        state=row.state, error=row.error)
        if row.state == "completed":
            _condition(status, "BackedUp", True, "BackedUp", f"backup {want}: {row.files} files, {row.size} bytes",
                       gen)
        else:
            _condition(status, "BackedUp", False, "BackupFailed", row.error or f"backup {want} failed", gen)
        flush()
        return
    client.report_backup(meta.id, want, BackupReport(state="running"))
    status.last_backup = LastBackup(id=want, state="running")
    _condition(status, "BackedUp", None, "BackingUp", f"backup {want} is being made", gen)
    flush()
    paths = EnvPaths(home, meta.id)
    sources = {"workspace": str(paths.volume)}
    container = next(iter(machine.of_environment(meta.id)), None)
    upper = machine.containers.bundle(container.id) / "upper" if container is not None else None
    if upper is not None and upper.is_dir():  # rootless too: the worker reads it in the keeper's namespace
        sources["upper"] = str(upper)
    # root: owners relative to the container's range; rootless: the worker sees keeper ids, which are the ones
    # inside but for a keep-id container's (or a volume a record says is still in another map: owner_maps.py)
    offset = container.idmap.uids[0][1] if container is not None and container.idmap.uids and os.geteuid() == 0 \
        else 0
    marker = paths.state / "source.json"
    repo, key, store_env = repository(home)
    job: dict[str, Any] = {"op": "backup", "repo": repo, "password_file": str(key), "store_env": store_env,
                           "env_id": meta.id, "sources": sources,
                           "id_offset": offset, "meta": {"backup": want, "environment": meta.name,
                                                         "source": marker.read_text() if marker.exists() else None}}
    if os.geteuid() != 0 and machine.containers.keeper is not None:
        userns = _map_of(paths, container)
        if userns:
            job["id_map"] = [list(r) for r in ids_for(machine.containers, userns)]
    try:
        if os.geteuid() == 0:  # the volume where its disk image is mounted, never the empty folder under it
            mount_disk_image(home, meta.id, paths.volume)
        reply = run_worker(job, prefix=worker_prefix(machine))
    except FlexError as err:
        msg = err.message + (f" ({err.hint})" if err.hint else "")
        client.report_backup(meta.id, want, BackupReport(state="failed", error=msg[:4096]))
        status.last_backup = LastBackup(id=want, time=datetime.now(UTC), state="failed", error=msg[:4096])
        _condition(status, "BackedUp", False, "BackupFailed", msg, gen)
        flush()
        return
    s = reply["summary"]
    files = int(s["files_new"]) + int(s["files_changed"]) + int(s["files_unmodified"])
    size = int(s["bytes_total"])
    write_atomic(paths.state / RETAIN_MARKER, json.dumps({"backup": want}))  # before the row: never lost
    client.report_backup(meta.id, want, BackupReport(state="completed", size=size, files=files,
                                                     snapshot=reply["snapshot"]["id"], repository=_which(home)))
    from flex.runner.reconcile import crash_point

    crash_point("backed-up")  # reported, not yet in the status: a restart must not back up again
    status.last_backup = LastBackup(id=want, time=datetime.now(UTC), size=size, files=files, state="completed")
    _condition(status, "BackedUp", True, "BackedUp", f"backup {want}: {files} files, {size} bytes", gen)
    flush()
    log.info("environment %s: backup %s made (%d files)", meta.id, want, files)


def _map_of(paths: EnvPaths, container: Container | None) -> str:
    """Rootless: the map the environment's files are in (owner_maps.py): a record's, else its container's."""
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads((paths.state / MAP_FILE).read_text()).get("userns") or "")
    return str(container.options.get("userns") or "") if container is not None else ""


def back_up_before_delete(client: FlexClient, home: Path, machine: Machine, env: Environment,
                          status: EnvironmentStatus, flush: Any) -> None:
    """A deleting environment's last backup (``spec.backup.request``, reason ``delete``: the server keeps it a
    while, issue 17): the container stopped first, so it is exact; not made (reported removed) when nothing can
    have changed since the last completed backup (no container ran after it). A failure does not stop the
    delete: the user asked for it."""
    want = env.spec.backup.request if env.spec.backup is not None else None
    last = status.last_backup
    if want is None or (last is not None and last.id == want and last.state in ("completed", "failed")):
        return
    containers = machine.of_environment(env.metadata.id)
    for c in containers:
        if c.state == "running":
            machine.stop(c)
    if last is not None and last.id != want and last.state == "completed" and last.time is not None:
        made = last.time.timestamp()
        ran = [c for c in machine.of_environment(env.metadata.id)
               if c.state == "running" or (c.started_at or 0) > made or (c.finished_at or 0) > made]
        if not ran and _exists(client, env.metadata.id, last.id):  # not removed through the API meanwhile
            with contextlib.suppress(NotFound):
                client.report_backup(env.metadata.id, want, BackupReport(state="removed"))
            log.info("environment %s: nothing changed since backup %s; no backup on delete", env.metadata.id,
                     last.id)
            return
    back_up_if_asked(client, home, machine, env, status, flush)


def _exists(client: FlexClient, env_id: str, backup_id: str) -> bool:
    try:
        return client.runner_backup(env_id, backup_id).state == "completed"
    except NotFound:
        return False


def retention_due(home: Path, env_id: str) -> bool:
    return (EnvPaths(home, env_id).state / RETAIN_MARKER).exists()


def retain_if_due(client: FlexClient, runner_id: str, home: Path, machine: Machine, env: Environment,
                  status: EnvironmentStatus, flush: Any) -> None:
    """After a backup (its marker), once: keep the newest spec.backup.keepLast (default 3) of the
    environment's backups, forget the others and prune; their rows go too. ``BackedUp``'s message then says
    what was kept. A failure here loses nothing: the marker stays, and the next reconcile tries again."""
    marker = EnvPaths(home, env.metadata.id).state / RETAIN_MARKER
    if not marker.exists():
        return
    keep = (env.spec.backup.keep_last if env.spec.backup is not None else None) or KEEP_LAST
    try:
        removed = _retain(client, runner_id, env, keep, *repository(home), worker_prefix(machine))
    except FlexError as err:  # the repository busy past the wait, or out of reach: the marker stays
        log.warning("environment %s: retention failed, tried again at the next reconcile: %s", env.metadata.id,
                    err.message)
        return
    cond = status.condition("BackedUp")
    if removed is not None and cond is not None and cond.status == "True" and "; kept " not in cond.message:
        _condition(status, "BackedUp", True, cond.reason, f"{cond.message}; kept the newest {keep}, removed "
                   f"{removed}", env.metadata.generation)
        flush()
        log.info("environment %s: retention kept the newest %d backups, removed %d", env.metadata.id, keep,
                 removed)
    marker.unlink(missing_ok=True)


def _retain(client: FlexClient, runner_id: str, env: Environment, keep: int, repo: str, key: Path,
            store_env: dict[str, str], prefix: list[str]) -> int | None:
    """How many backups retention removed; None when the environment is no longer ours (nothing to do).
    Any other failure is raised."""
    job: dict[str, Any] = {"repo": repo, "password_file": str(key), "store_env": store_env,
                           "env_id": env.metadata.id, "lock_wait": RETAIN_LOCK_WAIT}
    try:
        gone = []
        for bid in run_worker({**job, "op": "list"}, prefix=prefix).get("backups") or []:
            if isinstance(bid, str):
                try:
                    client.runner_backup(env.metadata.id, bid)
                except NotFound:
                    gone.append(bid)  # removed through the API (`flex backup rm`)
        if gone:  # ... or the environment itself is no longer ours (deleted, moved): then forget nothing
            client.runner_environment(runner_id, env.metadata.id)
        reply = run_worker({**job, "op": "retain", "keep_last": keep, "gone": gone}, prefix=prefix)
    except NotFound:
        return None
    removed = [b for b in reply.get("removed") or [] if isinstance(b, str)]
    for bid in removed:
        with contextlib.suppress(NotFound):
            client.report_backup(env.metadata.id, bid, BackupReport(state="removed"))
    return len(removed)


def _to_restore(env: Environment) -> str | None:
    """The backup this runner starts the environment from: a move's (issue 17.5), once it is bound here, wins
    over the spec.restoreFrom the environment was made with."""
    move = env.spec.move
    if move is not None and move.phase != "backup":
        return move.backup
    return env.spec.restore_from.backup if env.spec.restore_from is not None else None


def restore_if_asked(home: Path, env: Environment, status: EnvironmentStatus, flush: Any,
                     machine: Machine | None = None) -> None:
    """Before anything else of a new environment with ``spec.restoreFrom`` (or one moved here): its workspace
    (and source marker) from the backup, and its writable layer staged for the container. Once (a marker says
    done)."""
    backup_id = _to_restore(env)
    if backup_id is None:
        return
    meta, gen = env.metadata, env.metadata.generation
    paths = EnvPaths(home, meta.id)
    marker = paths.state / RESTORED_MARKER
    if marker.exists():  # done; say so again if the status write after it was lost (a control plane restart)
        was = status.condition("Restored")
        if was is None or was.status != "True":
            done = json.loads(marker.read_text())
            _condition(status, "Restored", True, "Restored", f"from backup {done.get('backup')} "
                       f"({done.get('files')} files)", gen)
        return
    paths.ensure()
    _condition(status, "Restored", None, "Restoring", f"restoring backup {backup_id}", gen)
    flush()
    # a volume on a disk image (disk_image.py) is restored inside it, so the workspace's renames stay on
    # one filesystem; only the writable layer is copied out (it goes to the container's bundle)
    on_image = os.path.ismount(paths.volume)
    tmp = paths.volume / ".flex-restore" if on_image else paths.tmp / f"restore-{meta.id}"
    from flex.runner.reconcile import crash_point

    crash_point("restore-started")
    as_root = machine.namespace_root() if machine is not None else None
    remove_tree(tmp, as_root)  # a restore cut short: start again
    repo, key, store_env = repository(home)
    try:
        reply = run_worker({"op": "restore", "repo": repo, "password_file": str(key), "store_env": store_env,
                            "backup": backup_id, "target": str(tmp),
                            # the writable layer in the namespace this runner's overlay reads: root's
                            # trusted.overlay.*, a user namespace's user.overlay.* (a move between the two kinds)
                            "overlay_xattrs": {"upper": "trusted" if os.geteuid() == 0 else "user"}},
                           prefix=worker_prefix(machine) if machine is not None else [])
    except FlexError as err:
        _condition(status, "Restored", False, "RestoreFailed", err.message + (f" ({err.hint})" if err.hint else ""),
                   gen)
        flush()
        raise FlexError(err.message, hint=err.hint) from err  # the restore failed, not the control plane
    # the workspace volume whole, in one rename (a clone or an earlier cut-short restore goes first); on a
    # disk image, entry by entry (the marker below comes last, so a cut-short move is redone whole)
    for entry in paths.volume.iterdir():
        if entry != tmp:
            remove_tree(entry, as_root)
    if on_image:
        for entry in (tmp / "workspace").iterdir():
            entry.rename(paths.volume / entry.name)
    else:
        paths.volume.rmdir()
        if as_root is not None and (tmp / "workspace").stat().st_uid != os.getuid():
            # its top is the runner's (the user's), as one it makes, whoever owned it there (a keep-id backup)
            as_root(lambda: os.chown(tmp / "workspace", 0, 0), "taking the restored workspace")
        (tmp / "workspace").rename(paths.volume)
    if (tmp / "upper").is_dir():
        remove_tree(paths.state / _UPPER, as_root)
        if on_image:
            _copy_tree(tmp / "upper", paths.state / _UPPER)
        else:
            _move_dir(tmp / "upper", paths.state / _UPPER, as_root)
    made = reply["snapshot"].get("meta") or {}
    was = made.get("environment")
    if isinstance(was, str) and was != meta.name and "/" not in was and was not in ("", ".", "..") and \
            (paths.volume / was).is_dir() and not (paths.volume / meta.name).exists():
        (paths.volume / was).rename(paths.volume / meta.name)  # the workspace is /workspaces/<new name>
    source = made.get("source")
    if source:
        write_atomic(paths.state / "source.json", source)
    if os.geteuid() == 0:  # stored as seen inside: reconcile shifts the workspace into the container's range
        write_atomic(paths.state / "owner.json", json.dumps({"uid": 0, "gid": 0}))
    elif machine is not None and machine.containers.keeper is not None:
        # keeper ids as seen inside, the plain map: a keep-id container gets it moved into its own (owner_maps.py)
        record_map(paths.state, "", replace=True)
    remove_tree(tmp, as_root)
    files = int(reply["summary"]["files"])
    write_atomic(paths.state / RESTORED_MARKER, json.dumps({"backup": backup_id, "files": files}))
    _condition(status, "Restored", True, "Restored", f"from backup {backup_id} ({files} files)", gen)
    flush()


def _move_dir(src: Path, dst: Path, as_root: Any) -> None:
    """A directory to another parent: that needs write access to the directory itself (its ``..``), which a
    writable layer of a keep-id container (its top is the container's root's, a subuid) denies the user; root
    of the user's namespace may."""
    try:
        src.rename(dst)
    except PermissionError:
        if as_root is None:
            raise
        as_root(lambda: os.rename(src, dst), "placing the restored writable layer")


def _copy_tree(src: Path, dst: Path) -> None:
    """``src`` to ``dst`` on another filesystem, owners, modes, xattrs (overlay opaque dirs) and device nodes
    (whiteouts) kept, under a temporary name first."""
    part = dst.with_name(dst.name + ".part")
    remove_tree(part)
    r = subprocess.run(["cp", "-a", "--preserve=all", "--", str(src), str(part)], capture_output=True, text=True,
                       timeout=3600)
    if r.returncode != 0:
        raise FailedPrecondition(f"copying the restored writable layer to {dst}: {r.stderr.strip()}")
    part.rename(dst)


def place_restored_upper(home: Path, env_id: str, container: Container, bundle: Path,
                         machine: Machine | None = None) -> None:
    """Before the container first starts: the restored writable layer becomes its upper dir. Root: owners
    moved from inside ids into the container's range (set-id bits put back after chown clears them);
    rootless: restored in the keeper's namespace, they are right already, and the keeper swaps it in."""
    staged = EnvPaths(home, env_id).state / _UPPER
    shifted = staged.with_name(_UPPER + ".shifted")  # a keep-id container's copy, owners in its map
    if not (staged.is_dir() or shifted.is_dir()) or container.state == "running":
        return
    keeper = machine.containers.keeper if machine is not None else None
    if os.geteuid() != 0:
        if keeper is None or machine is None:
            return
        if container.keep_id is not None or shifted.is_dir():
            if not shifted.is_dir():
                shift_copy(machine.containers, staged, shifted, None, container.options.get("userns"))
            remove_tree(staged, keeper.call)
            staged = shifted
        replace_upper(bundle, staged, keeper)
        return
    if not container.idmap.uids:
        return
    base_u, base_g = container.idmap.uids[0][1], container.idmap.gids[0][1]
    for dirpath, dirnames, filenames in os.walk(staged):
        for name in [*dirnames, *filenames]:
            _shift(os.path.join(dirpath, name), base_u, base_g)
    replace_upper(bundle, staged)


def _shift(path: str, base_u: int, base_g: int) -> None:
    st = os.lstat(path)
    os.lchown(path, base_u + st.st_uid, base_g + st.st_gid)
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def forget_expired(client: FlexClient, runner_id: str, home: Path, machine: Machine) -> int:
    """Backups of deleted environments whose time is up (the control plane lists those in a repository this
    runner looks after): their snapshots forgotten and the repository pruned, then each reported, so its row
    goes. Safe to cut anywhere: a snapshot forgotten but not reported is forgotten again. Returns how many."""
    due = [b.id for b in client.runner_expired_backups(runner_id).items]
    if not due:
        return 0
    repo, key, store_env = repository(home)
    reply = run_worker({"op": "forget", "repo": repo, "password_file": str(key), "store_env": store_env,
                        "backups": due}, prefix=worker_prefix(machine))
    for bid in reply.get("forgotten") or []:
        with contextlib.suppress(NotFound):
            client.runner_forgot_backup(runner_id, str(bid))
    log.info("forgot %d expired backup(s) of deleted environments (%d bytes freed)", len(due),
             int(reply.get("bytes_freed") or 0))
    return len(due)
