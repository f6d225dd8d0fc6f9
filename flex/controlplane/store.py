"""The desired-state store of environments: create, read, list, merge-patch, delete, runner status writes.

Every environment write locks the ``revision`` row first, takes the next resource version, and appends the
whole object to ``watch_events`` in the same transaction; ``generation`` moves only when the spec changes.
Visibility is decided here, once: a user sees their own environments, an admin all, a runner those bound
to it. What a caller may not see answers 404, never 403, so names do not leak.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import text, tuple_, update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import (
    Environment,
    EnvironmentCreate,
    EnvironmentSpec,
    EnvironmentStatus,
)
from flex.api.environments import check_labels
from flex.controlplane import audit, policy, scheduler
from flex.controlplane.auth import Principal
from flex.controlplane.db import Database
from flex.controlplane.errors import Unprocessable
from flex.controlplane.models import EnvironmentRow, Revision, RunnerRow, WatchEventRow
from flex.controlplane.preview.target import preview_url
from flex.errors import AlreadyExists, Conflict, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

__all__ = ["SERVER_CONDITIONS", "Store", "StoredEvent", "Wire", "check_inline_config", "check_local_source", "emit",
           "lock", "merge_patch", "row_wire", "utc"]

NOTIFY_CHANNEL = "flex_events"
SERVER_CONDITIONS = ("Scheduled", "RunnerReady", "Moving")  # owned by the control plane, not by runners
DELETED_BACKUP_RETENTION = 7 * 86400.0  # like Gitpod's and Codespaces' retention of deleted workspaces


def utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else (dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _ts(dt: datetime | None) -> str | None:
    """A timestamp exactly as pydantic writes one (UTC, ``Z``)."""
    at = utc(dt)
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def row_wire(row: EnvironmentRow) -> dict[str, Any]:
    """The wire form of a stored environment without a pydantic round trip: spec and status are stored in
    their wire form already (always written through the models), so only metadata is assembled here."""
    return {
        "metadata": {"id": row.id, "name": row.name, "owner": row.owner, "labels": row.labels,
                     "generation": row.generation, "resourceVersion": row.resource_version,
                     "createdAt": _ts(row.created_at), "updatedAt": _ts(row.updated_at),
                     "deletionTimestamp": _ts(row.deletion_timestamp)},
        "spec": row.spec,
        "status": row.status,
    }


@dataclass(frozen=True)
class Wire:
    """An environment as the JSON the API answers with, and its resourceVersion (for ETag)."""

    json: str
    rv: int

    @classmethod
    def of(cls, row: EnvironmentRow) -> Wire:
        return cls(json.dumps(row_wire(row), separators=(",", ":")), row.resource_version)

    @property
    def env(self) -> Environment:
        return Environment.model_validate_json(self.json)


_RAW_COLUMNS = ("id, name, owner, labels, generation, resource_version, created_at, updated_at, deletion_timestamp, "
                "spec, status")


def _raw_ts(value: str | None) -> str:
    return "null" if value is None else json.dumps(_ts(datetime.fromisoformat(value)))


def _raw_wire(r: tuple[Any, ...]) -> Wire:
    """row_wire's JSON from a raw SQLite row: labels, spec and status are already JSON text (written through
    the models), so they are spliced in rather than decoded and encoded again."""
    text_ = (f'{{"metadata":{{"id":{json.dumps(r[0])},"name":{json.dumps(r[1])},"owner":{json.dumps(r[2])},'
             f'"labels":{r[3]},"generation":{r[4]},"resourceVersion":{r[5]},"createdAt":{_raw_ts(r[6])},'
             f'"updatedAt":{_raw_ts(r[7])},"deletionTimestamp":{_raw_ts(r[8])}}},"spec":{r[9]},"status":{r[10]}}}')
    return Wire(text_, int(r[5]))


@dataclass(frozen=True)
class StoredEvent:
    rv: int
    type: str
    object: str  # the Environment as JSON, exactly as it was at rv


def lock(s: Session) -> int:
    """Serialize environment writers (row lock on PostgreSQL; BEGIN IMMEDIATE already holds SQLite's)."""
    return int(s.execute(select(Revision.rv).where(Revision.id == 1).with_for_update()).scalar_one())


def emit(s: Session, row: EnvironmentRow, type_: str, now: datetime, *, also: str | None = None) -> Wire:
    """Give ``row`` the next resource version and log it for watchers (after lock()); ``also``: a runner that
    must see this event besides the bound one and the one a move takes it from."""
    rv = int(s.execute(update(Revision).where(col(Revision.id) == 1).values(rv=col(Revision.rv) + 1)
                       .returning(col(Revision.rv))).scalar_one())
    row.resource_version = rv
    row.updated_at = now
    obj = Wire.of(row)
    s.add(WatchEventRow(rv=rv, type=type_, env_id=row.id, owner=row.owner, runner_id=row.runner_id,
                        move_from=also or row.move_from, object=obj.json))
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": str(rv)})
    return obj


def check_inline_config(spec: EnvironmentSpec) -> None:
    """An inline devcontainer.json is validated against the devcontainer schema before it is stored
    (InvalidConfiguration, HTTP 400), so a runner never has to reject it later."""
    config = spec.devcontainer.config
    if config is None:
        return
    from flex.devcontainer.config import parse_config

    parse_config(json.dumps(config, indent=2), "spec.devcontainer.config")


def check_local_source(s: Session, owner: str, runner_id: str | None) -> None:
    """A source on the runner's disk (source.path, file://) is for the owner's own desktop runner only: on any
    other runner it would read someone else's files. Unbound, the owner must have one to be bound to."""
    if runner_id is not None:
        runner = s.get(RunnerRow, runner_id)
        if runner is None or runner.kind != "desktop" or runner.owner != owner:
            raise InvalidArgument(f"spec.source: a local source (source.path or file://) needs {owner}'s own desktop "
                                  f"runner, and this environment runs on {runner.name if runner else runner_id}",
                                  hint="use a git://, https://, ssh:// or git@ URL, or create the environment anew")
        return
    mine = s.scalars(select(RunnerRow.id).where(RunnerRow.owner == owner, RunnerRow.kind == "desktop")).first()
    if mine is None:
        raise InvalidArgument(f"spec.source: a local source (source.path or file://) is read from the runner's own "
                              f"disk, so only a desktop runner of {owner} may use it, and {owner} has none",
                              hint="use a git://, https://, ssh:// or git@ URL, or join your laptop as a desktop "
                                   "runner first")


def _check_policy(s: Session, who: Principal, row: EnvironmentRow, spec: EnvironmentSpec) -> None:
    """A changed spec may not turn Docker on for someone the policy does not allow, nor grow past the owner's
    limits (shrinking is always allowed, so a user over a lowered limit can get under it)."""
    rules = policy.load_policy(s)
    if spec.docker and not row.spec.get("docker"):
        policy.check_docker(s, rules, who)
    r = spec.resources
    if r.cpus > row.req_cpus or r.memory > row.req_memory or r.disk > row.req_disk:
        policy.check_limits(s, rules, row.owner, spec, replacing=row.id)


def _requests(row: EnvironmentRow, spec: EnvironmentSpec) -> None:
    row.req_cpus, row.req_memory, row.req_disk = spec.resources.cpus, spec.resources.memory, spec.resources.disk


def _check_version(row: EnvironmentRow, if_match: str | None) -> None:
    if if_match is None:
        return
    want = if_match.strip().removeprefix("W/").strip('"')
    if want != "*" and want != str(row.resource_version):
        raise Conflict(f"environment {row.name!r} has changed: it is at resourceVersion {row.resource_version}, "
                       f"the request expected {want}", hint="get it again, re-apply your change, and retry")


def _invalid(err: ValidationError, prefix: str) -> Unprocessable:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    return Unprocessable(f"{prefix}{'.' + where if where else ''}: {msg}")


class _Unchanged(Exception):
    def __init__(self, wire: Wire) -> None:
        self.wire = wire


class Store:
    """Environment reads and writes for one process; ``on_commit`` wakes this process's watchers."""

    HINT_TTL = 1.0  # seconds a placement hint is reused; it is only a hint: the choice is re-checked under the lock

    def __init__(self, db: Database, on_commit: Callable[[], None]) -> None:
        self.db = db
        self.on_commit = on_commit
        self._hint: tuple[float, list[scheduler.RunnerLoad]] | None = None
        self._hint_lock = threading.Lock()
        self.writer = threading.Lock()
        # issue 17: seconds a deleted environment's last backup stays (Settings.deleted_backup_retention); 0: none
        self.deleted_backup_retention = DELETED_BACKUP_RETENTION

    def forget_hint(self) -> None:
        """Runners changed (joined, came back, changed capacity): the next create reads them afresh."""
        with self._hint_lock:
            self._hint = None

    def _placement_hint(self) -> list[scheduler.RunnerLoad]:
        with self._hint_lock:
            cached = self._hint
        if cached is not None and time.monotonic() - cached[0] < self.HINT_TTL:
            return cached[1]
        with self.db.read() as s:
            loads = scheduler.loads(s, ready_only=True)
        with self._hint_lock:
            self._hint = (time.monotonic(), loads)
        return loads

    # -- lookups ---------------------------------------------------------------------------------------

    @staticmethod
    def _visible(who: Principal, ref: str, owner: str | None) -> tuple[str, dict[str, Any]]:
        """The WHERE condition of ``ref`` as ``who`` may see it: SQL text with named parameters, shared by the
        ORM lookups and the raw SQLite read below, so visibility is decided in this one place."""
        conds: list[str] = []
        params: dict[str, Any] = {}

        def eq(column: str, value: Any) -> None:
            params[f"v{len(params)}"] = value
            conds.append(f"environments.{column} = :v{len(params) - 1}")

        if ref.startswith("env_"):
            eq("id", ref)
        elif who.kind == "runner":
            eq("name", ref)
        else:
            eq("owner", owner if (who.admin and owner) else who.name)
            eq("name", ref)
        if who.kind == "runner":  # bound to it, or (issue 17.5) moving away from it
            params[f"v{len(params)}"] = who.id
            n = len(params) - 1
            conds.append(f"(environments.runner_id = :v{n} OR environments.move_from = :v{n})")
        elif not who.admin:
            eq("owner", who.name)
        return " AND ".join(conds), params

    @staticmethod
    def _one(rows: list[Any], ref: str) -> Any:
        if not rows:
            raise NotFound(f"environment {ref!r} not found", hint="list environments with `flex ls`")
        if len(rows) > 1:
            raise Conflict(f"environment name {ref!r} is ambiguous here", hint="address it by its metadata.id")
        return rows[0]

    @staticmethod
    def find(s: Session, who: Principal, ref: str, owner: str | None = None) -> EnvironmentRow:
        cond, params = Store._visible(who, ref, owner)
        row: EnvironmentRow = Store._one(list(s.scalars(select(EnvironmentRow).where(
            text(cond).bindparams(**params)).limit(2))), ref)
        return row

    def current_rv(self) -> tuple[int, int]:
        """(newest resource version, newest compacted one)."""
        with self.db.read() as s:
            rev = s.get(Revision, 1)
            assert rev is not None
            return rev.rv, rev.compacted

    def get(self, who: Principal, ref: str, owner: str | None = None) -> Wire:
        with self.db.read() as s:
            return Wire.of(self.find(s, who, ref, owner))

    async def get_async(self, who: Principal, ref: str, owner: str | None = None) -> Wire:
        """The hot read (issue 12.7). SQLite: one indexed SELECT on the event loop through the process's own
        sqlite3 connection, the stored JSON spliced into the answer as it is. That takes tens of
        microseconds, less than handing the read to a thread and back, and threads contending for the GIL
        were what stretched p99 to ~90 ms. PostgreSQL: in a thread, since a network round trip must not
        stall the loop."""
        if self.db.is_postgres:
            return await asyncio.to_thread(self.get, who, ref, owner)
        cond, params = self._visible(who, ref, owner)
        rows = self.db.loop_reader().execute(f"SELECT {_RAW_COLUMNS} FROM environments WHERE {cond} LIMIT 2",
                                             params).fetchall()
        return _raw_wire(self._one(rows, ref))

    def list_environments(self, who: Principal, *, limit: int, cont: str | None, owner: str | None = None,
             labels: dict[str, str] | None = None, phase: str | None = None,
             runner_id: str | None = None) -> dict[str, Any]:
        """One page, ordered by (owner, name); filters apply before paging, so pages are full."""
        after: tuple[str, str] | None = None
        if cont:
            try:
                o, n = json.loads(base64.urlsafe_b64decode(cont.encode()))
                after = (str(o), str(n))
            except Exception as err:
                raise InvalidArgument(f"continue: {cont!r} is not a token this server gave out",
                                      hint="start again without continue") from err
        items: list[dict[str, Any]] = []
        more = False
        with self.db.read() as s:
            if self.db.is_postgres:  # the list and its resourceVersion from one snapshot
                s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            rev = s.get(Revision, 1)
            assert rev is not None
            while True:
                q = select(EnvironmentRow).order_by(EnvironmentRow.owner, EnvironmentRow.name).limit(limit + 1)
                if who.kind == "runner":
                    q = q.where((col(EnvironmentRow.runner_id) == who.id) | (col(EnvironmentRow.move_from) == who.id))
                elif not who.admin:
                    q = q.where(EnvironmentRow.owner == who.name)
                elif owner:
                    q = q.where(EnvironmentRow.owner == owner)
                if runner_id and who.kind == "user" and who.admin:
                    q = q.where(EnvironmentRow.runner_id == runner_id)
                if after is not None:
                    q = q.where(tuple_(EnvironmentRow.owner, EnvironmentRow.name) > after)
                rows = list(s.scalars(q))
                for row in rows:
                    if len(items) == limit:
                        more = True
                        break
                    after = (row.owner, row.name)
                    if labels and any(row.labels.get(k) != v for k, v in labels.items()):
                        continue
                    if phase and row.status.get("phase", "pending") != phase:
                        continue
                    items.append(row_wire(row))
                if more or len(rows) <= limit:
                    break
        token = None
        if more and items:
            last = items[-1]["metadata"]
            token = base64.urlsafe_b64encode(json.dumps([last["owner"], last["name"]]).encode()).decode()
        return {"items": items, "metadata": {"resourceVersion": rev.rv, "continue": token}}

    # -- writes ----------------------------------------------------------------------------------------

    def _write(self, fn: Callable[[Session, datetime], Wire]) -> Wire:
        try:
            # One environment writer per process at a time: the database lock serializes them anyway, and
            # queueing here keeps the others from holding connections and fighting the writer for the GIL.
            with self.writer, self.db.write() as s:
                lock(s)
                wire = fn(s, datetime.now(UTC))
        except _Unchanged as same:
            return same.wire
        self.on_commit()
        return wire

    def create(self, who: Principal, body: EnvironmentCreate, *, restore_on: str | None = None) -> Wire:
        check_inline_config(body.spec)
        hint = self._placement_hint()  # placement is chosen before the write lock, re-checked under it

        def op(s: Session, now: datetime) -> Wire:
            exists = s.scalars(select(EnvironmentRow.id).where(EnvironmentRow.owner == who.name,
                                                               EnvironmentRow.name == body.name)).first()
            if exists is not None:
                raise AlreadyExists(f"environment {body.name!r} already exists",
                                    hint="pick another name (`flex up --name NAME`), or update that one")
            if body.spec.source.local:
                check_local_source(s, who.name, None)
            rules = policy.load_policy(s)
            spec = policy.with_default_memory(rules, body.spec)
            if spec.docker:
                policy.check_docker(s, rules, who)
            policy.check_limits(s, rules, who.name, spec)
            row = EnvironmentRow(id="env_" + uuid.uuid4().hex[:20], owner=who.name, name=body.name,
                                 labels=body.labels, spec=spec.to_wire(), status=EnvironmentStatus().to_wire(),
                                 generation=1, created_at=now, updated_at=now)
            _requests(row, spec)
            from flex.controlplane.backups import bind_restore  # issue 17: a restore goes where its backup is

            if not bind_restore(s, row, now, restore_on):
                scheduler.bind_hinted(s, row, hint, now)
            if row.runner_id is not None:  # count it in the shared hint too, so the next create sees the load
                for load in hint:
                    if load.id == row.runner_id:
                        load.used_cpus += row.req_cpus
                        load.used_memory += row.req_memory
                        load.used_disk += row.req_disk
                        load.count += 1
            s.add(row)
            wire = emit(s, row, "ADDED", now)
            audit.record(s, who.actor, "environment.create", f"environment:{who.name}/{body.name}",
                         generation=1, runner=row.runner_id)
            return wire

        return self._write(op)

    def patch(self, who: Principal, ref: str, patch: Any, *, owner: str | None = None,
              if_match: str | None = None) -> Wire:
        if not isinstance(patch, dict):
            raise InvalidArgument("a merge patch must be a JSON object",
                                  hint='e.g. {"spec": {"desiredPhase": "stopped"}}')

        def op(s: Session, now: datetime) -> Wire:
            row = self.find(s, who, ref, owner)
            _check_version(row, if_match)
            current = row_wire(row)
            patched = merge_patch(current, patch)
            rest_now = {**current, "metadata": {**current["metadata"], "labels": None}, "spec": None}
            rest_new = {**patched, "metadata": {**(patched.get("metadata") or {}), "labels": None}, "spec": None}
            if rest_now != rest_new:
                raise InvalidArgument("only spec and metadata.labels may change",
                                      hint="status is written by the runner; owner, name and versions by the server")
            try:
                spec = EnvironmentSpec.model_validate(patched.get("spec"))
            except ValidationError as err:
                raise _invalid(err, "spec") from err
            labels = patched["metadata"].get("labels") or {}
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise Unprocessable("metadata.labels: must be an object of strings")
            try:
                check_labels(labels, "metadata.labels")
            except ValueError as err:
                raise Unprocessable(str(err)) from err
            spec_changed = spec.to_wire() != current["spec"]
            from flex.controlplane.backups import check_spec_change

            check_spec_change(current["spec"], spec.to_wire())
            if spec.source.local and spec.source.to_wire() != current["spec"].get("source"):
                check_local_source(s, row.owner, row.runner_id)
            if spec_changed and current["spec"].get("move"):
                raise Conflict(f"environment {row.name!r} is moving to another runner",
                               hint="change it once the move is done (its Moving condition says)")
            if spec_changed:
                _check_policy(s, who, row, spec)
            if spec_changed and spec.devcontainer != EnvironmentSpec.model_validate(row.spec).devcontainer:
                check_inline_config(spec)
            if row.deletion_timestamp is not None:
                raise Conflict(f"environment {row.name!r} is being deleted", hint="create a new one once it is gone")
            if not spec_changed and labels == row.labels:
                raise _Unchanged(Wire.of(row))
            if spec_changed:
                from flex.controlplane.backups import on_stop  # issue 17: a stop asks for a backup too

                row.spec = on_stop(s, row, current["spec"], spec.to_wire(), now)
                row.generation += 1
                _requests(row, spec)
            row.labels = labels
            wire = emit(s, row, "MODIFIED", now)
            audit.record(s, who.actor, "environment.update", f"environment:{row.owner}/{row.name}",
                         generation=row.generation, desired_phase=spec.desired_phase,
                         fields=sorted(k for k in ("spec", "metadata") if k in patch))
            return wire

        return self._write(op)

    def set_desired_phase(self, who: Principal, ref: str, phase: str, *, owner: str | None = None,
                          if_match: str | None = None) -> Wire:
        return self.patch(who, ref, {"spec": {"desiredPhase": phase}}, owner=owner, if_match=if_match)

    def rebuild(self, who: Principal, ref: str, *, owner: str | None = None, if_match: str | None = None) -> Wire:
        """A new container from the same spec on the same volumes, started: spec.rebuild goes up by one (so does
        the generation), which changes the runner's fingerprint of what the container is made from."""
        for _ in range(5):  # two rebuilds at once are two rebuilds: each bumps the value it read
            with self.db.read() as s:
                row = self.find(s, who, ref, owner)
                seen, count = str(row.resource_version), int(row.spec.get("rebuild") or 0)
                if row.deletion_timestamp is not None:
                    raise Conflict(f"environment {row.name!r} is being deleted",
                                   hint="create a new one once it is gone")
            try:
                return self.patch(who, ref, {"spec": {"rebuild": count + 1, "desiredPhase": "running"}}, owner=owner,
                                  if_match=if_match or seen)
            except Conflict:
                if if_match is not None:
                    raise
        raise Conflict(f"environment {ref!r} keeps changing", hint="try the rebuild again")

    def delete(self, who: Principal, ref: str, *, owner: str | None = None,
               if_match: str | None = None, force: bool = False) -> tuple[Wire, bool]:
        """Mark deleting (the bound runner tears down, then confirms); gone at once if never bound.

        ``force`` (admins): gone at once without waiting for the runner, for one that is gone for good. A runner
        that comes back finds the environment absent and tears down what it still has of it."""
        if force and not who.admin:
            raise PermissionDenied("only an admin may force-delete an environment",
                                   hint="delete it without force: its runner tears it down, then it is gone")
        gone = False

        from flex.controlplane.backups import on_delete, on_deleted  # issue 17: a last backup, kept a while

        keep_for = self.deleted_backup_retention

        def op(s: Session, now: datetime) -> Wire:
            nonlocal gone
            row = self.find(s, who, ref, owner)
            _check_version(row, if_match)
            if force:
                if row.deletion_timestamp is None:
                    row.deletion_timestamp = now
                env = emit(s, row, "DELETED", now)
                on_deleted(s, row, now, keep_for)
                s.delete(row)
                gone = True
                audit.record(s, who.actor, "environment.force-delete", f"environment:{row.owner}/{row.name}",
                             runner=row.runner_id)
                return env
            if row.deletion_timestamp is not None:
                raise _Unchanged(Wire.of(row))
            row.deletion_timestamp = now
            if row.runner_id is None:
                env = emit(s, row, "DELETED", now)
                on_deleted(s, row, now, keep_for)
                s.delete(row)
                gone = True
            else:
                on_delete(s, row, now, keep_for)
                env = emit(s, row, "MODIFIED", now)
            audit.record(s, who.actor, "environment.delete", f"environment:{row.owner}/{row.name}", immediate=gone)
            return env

        env = self._write(op)
        return env, gone

    def put_status(self, who: Principal, ref: str, status: EnvironmentStatus, *,
                   if_match: str | None = None, preview_base: str | None = None) -> Wire:
        """A runner reports what it observed; only the runner the environment is bound to may."""
        if who.kind != "runner":
            raise PermissionDenied("only the runner an environment is bound to may write its status",
                                   hint="update the spec instead (`flex up`, or PATCH it)")

        def op(s: Session, now: datetime) -> Wire:
            row = self.find(s, who, ref)
            if row.runner_id != who.id:
                raise FailedPrecondition(f"environment {row.name!r} has moved to another runner",
                                         hint="only the runner it is bound to writes its status")
            _check_version(row, if_match)
            if status.observed_generation > row.generation:
                raise Unprocessable(f"status.observedGeneration: {status.observed_generation} is newer than "
                                    f"generation {row.generation}")
            old = EnvironmentStatus.model_validate(row.status)
            new = status.model_copy(deep=True)
            new.runner_id = row.runner_id
            new.conditions = [c for c in new.conditions if c.type not in SERVER_CONDITIONS]
            new.conditions[:0] = [c for c in old.conditions if c.type in SERVER_CONDITIONS]
            for p in new.ports:  # the runner cannot know how people reach this server
                p.url = preview_url(preview_base, row.owner, row.name, p.port) if preview_base else None
            if new.to_wire() == old.to_wire():
                raise _Unchanged(Wire.of(row))
            row.status = new.to_wire()
            from flex.controlplane.moves import advance  # issue 17.5: the new runner's status may end a move

            step = advance(s, row, now)
            return emit(s, row, "MODIFIED", now, also=step.also if step else None)

        return self._write(op)

    def confirm_teardown(self, who: Principal, ref: str) -> Wire:
        """The bound runner has removed everything of a deleting environment: the row goes."""

        def op(s: Session, now: datetime) -> Wire:
            row = self.find(s, who, ref)
            if row.move_from == who.id and row.runner_id != who.id:  # issue 17.5: the old copy is gone
                from flex.controlplane.moves import old_copy_removed

                return old_copy_removed(s, row, now)
            if row.deletion_timestamp is None:
                raise FailedPrecondition(f"environment {row.name!r} is not being deleted")
            env = emit(s, row, "DELETED", now)
            from flex.controlplane.backups import on_deleted

            on_deleted(s, row, now, self.deleted_backup_retention)
            s.delete(row)
            audit.record(s, who.actor, "environment.teardown", f"environment:{row.owner}/{row.name}")
            return env

        return self._write(op)

    # -- the watch log ---------------------------------------------------------------------------------

    def events_after(self, rv: int, *, owner: str | None = None, runner_id: str | None = None,
                     limit: int = 1000) -> list[StoredEvent]:
        with self.db.read() as s:
            q = select(WatchEventRow.rv, WatchEventRow.type, WatchEventRow.object).where(WatchEventRow.rv > rv)
            if owner is not None:
                q = q.where(WatchEventRow.owner == owner)
            if runner_id is not None:
                q = q.where((col(WatchEventRow.runner_id) == runner_id) | (col(WatchEventRow.move_from) == runner_id))
            rows = s.execute(q.order_by(col(WatchEventRow.rv)).limit(limit)).all()
        return [StoredEvent(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def compact(self, keep: int) -> int:
        """Drop all but the newest ``keep`` events; watches from before them answer 410. Returns the cut."""
        with self.db.write() as s:
            rev = s.get(Revision, 1)
            assert rev is not None
            cut = rev.rv - keep
            if cut <= rev.compacted:
                return rev.compacted
            s.execute(WatchEventRow.__table__.delete().where(WatchEventRow.rv <= cut))  # type: ignore[attr-defined]
            s.execute(update(Revision).where(col(Revision.id) == 1, col(Revision.compacted) < cut)
                      .values(compacted=cut))
            return cut
