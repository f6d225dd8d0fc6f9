"""Watch streams: one tailer per process reads the event log in resourceVersion order and fans it out.

Writers on this process wake the tailer directly; on PostgreSQL, writers anywhere ``NOTIFY flex_events``
in their transaction, and the tailer ``LISTEN``s, so a watcher on one replica sees writes made through
another. A slow poll backs both up, so a lost notification only delays an event, never loses it.

A watcher subscribes first, then reads the backlog after its resourceVersion from the database, then takes
live events, skipping any it already sent: no event is lost or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from flex.api.errors import Gone
from flex.controlplane.store import NOTIFY_CHANNEL, Store, StoredEvent

__all__ = ["Hub", "Subscriber"]

log = logging.getLogger("flex.controlplane.watch")
_POLL = 1.0


@dataclass(eq=False)
class Subscriber:
    owner: str | None
    runner_id: str | None
    queue: asyncio.Queue[StoredEvent | None]
    start: int
    expired: bool = False
    owners: set[str] = field(default_factory=set)

    def wants(self, ev_owner: str, ev_runner: str | None, ev_move_from: str | None = None) -> bool:
        if self.runner_id is not None:
            return self.runner_id in (ev_runner, ev_move_from)
        return self.owner is None or ev_owner == self.owner


class Hub:
    def __init__(self, store: Store, *, listen_url: str | None, queue_size: int, keepalive: float) -> None:
        self.store = store
        self.listen_url = listen_url
        self.queue_size = queue_size
        self.keepalive = keepalive
        self.cursor = 0
        self.subscribers: set[Subscriber] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = False
        self._stopping = False
        self._ending = False

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.cursor, _ = await asyncio.to_thread(self.store.current_rv)
        self._tasks.append(asyncio.create_task(self._tail(), name="flex-watch-tail"))
        if self.listen_url:
            self._tasks.append(asyncio.create_task(self._listen(), name="flex-watch-listen"))

    async def stop(self) -> None:
        # The tailer finishes its current read (a thread holding a pooled connection), then ends; only the
        # LISTEN task is cancelled, and it closes its connection on the way out.
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for sub in list(self.subscribers):
            sub.queue.put_nowait(None) if not sub.queue.full() else None
        self.subscribers.clear()

    def end_watches(self) -> None:
        """The server is shutting down: every open watch ends now, and one that starts later ends at once. A
        stream never ends by itself, so the server would otherwise wait out its graceful-shutdown timeout and
        then cut it (the client sees a broken response, not an end). Clients re-watch from their last
        resourceVersion, from another replica or this one restarted."""
        self._ending = True
        for sub in list(self.subscribers):
            if sub.queue.full():
                sub.expired = True  # it ends (Gone) once it has sent what it holds
            else:
                sub.queue.put_nowait(None)

    def wake(self) -> None:
        """Called from any thread after a commit on this process."""
        loop, ev = self._loop, self._wake
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    # -- tailing ---------------------------------------------------------------------------------------

    async def _tail(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL)
            self._wake.clear()
            if self._stopping:
                return
            try:
                while True:
                    batch = await asyncio.to_thread(self._read, self.cursor)
                    for ev, owner, runner, moving in batch:
                        self._dispatch(ev, owner, runner, moving)
                        self.cursor = ev.rv
                    if len(batch) < 1000:
                        break
            except Exception:  # the database went away for a moment: retry on the next wake or poll
                log.warning("reading the watch log failed; retrying", exc_info=True)
                await asyncio.sleep(_POLL)

    def _read(self, after: int) -> list[tuple[StoredEvent, str, str | None, str | None]]:
        from sqlmodel import select

        from flex.controlplane.models import WatchEventRow

        with self.store.db.read() as s:
            rows = s.execute(select(WatchEventRow.rv, WatchEventRow.type, WatchEventRow.object,  # type: ignore[call-overload]
                                    WatchEventRow.owner, WatchEventRow.runner_id, WatchEventRow.move_from)
                             .where(WatchEventRow.rv > after).order_by(WatchEventRow.rv).limit(1000)).all()
        return [(StoredEvent(int(r[0]), str(r[1]), str(r[2])), str(r[3]), r[4], r[5]) for r in rows]

    def _dispatch(self, ev: StoredEvent, owner: str, runner: str | None, moving: str | None = None) -> None:
        for sub in list(self.subscribers):
            if sub.expired or not sub.wants(owner, runner, moving):
                continue
            try:
                sub.queue.put_nowait(ev)
            except asyncio.QueueFull:  # too slow to keep up: tell it to re-list rather than drop events
                sub.expired = True
                self.subscribers.discard(sub)

    async def _listen(self) -> None:
        import psycopg

        assert self.listen_url is not None and self._wake is not None
        while True:
            # Connect in its own task so a cancellation never abandons a half-open connection.
            connecting = asyncio.ensure_future(psycopg.AsyncConnection.connect(self.listen_url, autocommit=True))
            conn: psycopg.AsyncConnection[object] | None = None
            try:
                conn = await asyncio.shield(connecting)
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self.listening = True
                self._wake.set()  # catch up with anything written while we were not listening
                async for _ in conn.notifies():
                    self._wake.set()
            except asyncio.CancelledError:
                if conn is None:
                    with contextlib.suppress(Exception):
                        conn = await connecting
                raise
            except Exception:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(_POLL)

    # -- watching --------------------------------------------------------------------------------------

    async def watch(self, *, since: int | None, owner: str | None, runner_id: str | None,
                    deadline: float | None = None) -> AsyncIterator[StoredEvent | None]:
        """Events after ``since`` (or from now) until ``deadline`` (loop time); ``None`` items are keepalive
        ticks. Raises Gone if ``since`` is older than the log keeps."""
        if self._ending:
            return
        loop = asyncio.get_running_loop()
        sub = Subscriber(owner, runner_id, asyncio.Queue(self.queue_size), start=self.cursor)
        self.subscribers.add(sub)
        try:
            rv_now, _ = await asyncio.to_thread(self.store.current_rv)
            last = rv_now if since is None else since
            # Backlog (last, sub.start]: read from the database; later events arrive through the queue.
            while last < sub.start:
                batch = await asyncio.to_thread(self.store.events_after, last, owner=owner, runner_id=runner_id)
                batch = [e for e in batch if e.rv <= sub.start]
                _, compacted = await asyncio.to_thread(self.store.current_rv)
                if since is not None and since < compacted:
                    raise Gone(f"resourceVersion {since} is too old (the event log starts after {compacted})",
                               hint="list again and watch from the list's resourceVersion")
                for old in batch:
                    yield old
                    last = old.rv
                if len(batch) < 1000:
                    break
            if since is not None and last == since:
                _, compacted = await asyncio.to_thread(self.store.current_rv)
                if since < compacted:
                    raise Gone(f"resourceVersion {since} is too old (the event log starts after {compacted})",
                               hint="list again and watch from the list's resourceVersion")
            last = max(last, sub.start)
            while True:
                if sub.expired and sub.queue.empty():
                    raise Gone("this watch fell too far behind", hint="list again and watch from there")
                wait = self.keepalive if deadline is None else min(self.keepalive, deadline - loop.time())
                if wait <= 0:
                    return
                try:
                    ev = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        return
                    yield None
                    continue
                if ev is None:
                    return
                if ev.rv > last:
                    last = ev.rv
                    yield ev
        finally:
            self.subscribers.discard(sub)
