"""Retention policies (restic's --keep-last/--keep-daily/--keep-weekly), per group of tags."""

from __future__ import annotations

import datetime as dt

from flex.backup import Policy, Snapshot, apply_policy


def _snaps(times: list[str], tag: str) -> list[Snapshot]:
    return [Snapshot(id=f"{tag}{i:04d}", time=t, tree="", tags=[tag]) for i, t in enumerate(times)]


def _at(days: float) -> str:
    return (dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC) - dt.timedelta(days=days)).isoformat()


def test_keep_last_daily_weekly_per_group() -> None:
    # every 8 hours for 30 days in group a; two in group b
    a = _snaps([_at(h / 3) for h in range(90, -1, -1)], "a")
    b = _snaps([_at(40), _at(1)], "b")
    keep, remove = apply_policy(a + b, Policy(keep_last=2, keep_daily=3, keep_weekly=2))
    kept_a = sorted((s.time[:16] for s in keep if s.tags == ["a"]), reverse=True)
    # last 2: Mon 30th 12:00 and 04:00; daily 3: the 30th, 29th, 28th's newest; weekly 2: Mon 30th (this ISO
    # week) and Sun 29th 20:00 (the last of the week before)
    assert kept_a == ["2026-11-30T12:00", "2026-11-30T04:00", "2026-11-29T20:00", "2026-11-28T20:00"]
    assert {s.id for s in keep if s.tags == ["b"]} == {"b0000", "b0001"}  # other groups keep their own
    assert len(keep) + len(remove) == len(a) + len(b) and not {s.id for s in keep} & {s.id for s in remove}


def test_empty_policy_keeps_everything() -> None:
    a = _snaps([_at(1), _at(0)], "a")
    assert apply_policy(a, Policy()) == (a, [])


def test_keep_weekly_takes_one_per_iso_week() -> None:
    a = _snaps([_at(d) for d in range(27, -1, -1)], "a")  # one a day for 4 weeks
    keep, _ = apply_policy(a, Policy(keep_weekly=3))
    weeks = [dt.datetime.fromisoformat(s.time).isocalendar()[:2] for s in keep]
    assert len(keep) == 3 and len(set(weeks)) == 3
    latest_per_week = {}
    for s in a:
        latest_per_week[dt.datetime.fromisoformat(s.time).isocalendar()[:2]] = s.id
    assert {s.id for s in keep} == set(sorted(latest_per_week.values())[-3:])
