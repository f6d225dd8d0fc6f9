"""The keyed work queue: coalescing, one worker per key, delays, per-key backoff with jitter."""

from __future__ import annotations

import threading

from flex.runner.queue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_adds_coalesce_and_a_key_in_progress_is_queued_again_after_done() -> None:
    q = WorkQueue()
    for _ in range(3):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get(0) == "a"
    q.add("a")  # changed while being reconciled: not handed to a second worker now...
    assert q.get(0) == "b"
    assert q.get(0) is None
    q.done("a")  # ...but again once the first reconcile is done
    assert q.get(0) == "a"


def test_backoff_grows_per_key_with_jitter_and_forget_resets_it() -> None:
    clock = Clock()
    q = WorkQueue(base_delay=1.0, max_delay=8.0, jitter=lambda: 1.0, clock=clock)
    assert [q.failed("a") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert WorkQueue(base_delay=1.0, jitter=lambda: 0.0).failed("a") == 0.5  # jitter spreads [0.5, 1) x
    assert q.failed("b") == 1.0  # per key
    assert q.get(0) is None
    clock.now = 1.0
    assert q.get(0) == "a" and q.get(0) == "b"
    q.forget("a")
    assert q.failed("a") == 1.0


def test_get_wakes_for_an_add_from_another_thread() -> None:
    q = WorkQueue()
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(10)))
    t.start()
    q.add("x")
    t.join(10)
    assert got == ["x"]
    q.close()
    assert q.get(None) is None


def test_a_status_write_event_does_not_queue_again_a_spec_change_or_delete_does() -> None:
    from flex.api import WatchEvent
    from flex.runner.agent import news

    def event(kind: str, generation: int, deleting: bool = False, rv: int = 1) -> WatchEvent:
        return WatchEvent.model_validate({"type": kind, "object": {
            "metadata": {"id": "env_1", "name": "app", "owner": "u", "generation": generation,
                         "resourceVersion": rv, "createdAt": "2026-12-02T00:00:00Z",
                         "updatedAt": "2026-12-02T00:00:00Z",
                         **({"deletionTimestamp": "2026-12-02T00:01:00Z"} if deleting else {})},
            "spec": {"source": {"git": "https://example.invalid/app.git"}}}})

    seen: dict[str, tuple[int, bool]] = {}
    assert news(seen, event("ADDED", 1))
    assert not news(seen, event("MODIFIED", 1, rv=2))  # the runner's own status write: the backoff holds
    assert news(seen, event("MODIFIED", 2, rv=3))  # a spec change
    assert not news(seen, event("MODIFIED", 2, rv=4))
    assert news(seen, event("MODIFIED", 2, deleting=True, rv=5))  # a delete
    assert news(seen, event("DELETED", 2, deleting=True, rv=6))
