"""What a page says about an environment that is not simply fine: what happened, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass

from flex.api import Condition, Environment

__all__ = ["Explanation", "explain", "timeline"]


@dataclass(frozen=True)
class Explanation:
    level: str  # "error" | "warning" | "info"
    title: str
    what: str
    todo: str


def _false(env: Environment) -> Condition | None:
    """The condition that says why, preferring Ready's own reason over the steps before it."""
    bad = [c for c in env.status.conditions if c.status == "False"]
    ready = next((c for c in bad if c.type == "Ready"), None)
    return next((c for c in bad if c.type != "Ready" and c.message), ready)


def explain(env: Environment, runner_name: str, runner_state: str) -> Explanation | None:
    status, meta = env.status, env.metadata
    if status.runner_id and runner_state == "offline":
        return Explanation("warning", f"Runner {runner_name or status.runner_id} is offline",
                           "Its heartbeats stopped, so nothing here changes until it is back; the environment's "
                           "files stay on that machine.",
                           "Check the runner machine (flex runner status there) or ask an admin; the "
                           "environment resumes when the runner reconnects.")
    if meta.deletion_timestamp is not None:
        return Explanation("info", "Being deleted", "Its runner is tearing down the container and the workspace.",
                           "Nothing: it disappears from the list when the runner confirms.")
    if status.phase == "failed":
        why = _false(env)
        what = (f"{why.type}: {why.reason} — {why.message}" if why and why.message else
                (status.message or "the runner reported a failure without a message"))
        return Explanation("error", "This environment failed", what,
                           "Fix the cause (the repository, its devcontainer.json, or the resources asked for), "
                           "then Rebuild it to try again from the same spec (the workspace is kept) — or Stop "
                           "and Start it, or delete it.")
    if not status.runner_id and not meta.deletion_timestamp and env.spec.desired_phase == "running":
        sched = next((c for c in status.conditions if c.type == "Scheduled" and c.status == "False"), None)
        return Explanation("info", "Waiting for a runner",
                           sched.message if sched and sched.message else
                           "No ready runner has taken it yet (none has room, or none matches its selector).",
                           "It starts by itself once a runner can take it; an admin can see capacity on the "
                           "Runners page or join another runner.")
    return None


def timeline(env: Environment) -> list[Condition]:
    """Conditions, newest transition first."""
    return sorted(env.status.conditions, key=lambda c: c.last_transition_time.timestamp()
                  if c.last_transition_time else 0.0, reverse=True)
