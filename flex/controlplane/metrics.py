"""Prometheus metrics (text exposition format 0.0.4), every name prefixed ``flex_``.

Request counts and latencies are kept in-process by a small ASGI middleware (latency is the time to the
response's first byte, so a watch stream open for an hour counts as fast as its headers were). Gauges of
watchers, environments by phase and runners by state are read when /metrics is scraped.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BUCKETS", "CONTENT_TYPE", "Metrics", "MetricsMiddleware"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Counters of one process; only the event loop writes them, so they need no lock."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        self.requests[(method, route, str(code))] += 1
        key = (method, route)
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0] * (len(BUCKETS) + 1)
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.sums[key] += seconds

    def render(self, *, watchers: int, environments: Mapping[str, int], runners: Mapping[str, int]) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Iterable[str]) -> None:
            out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples])

        family("flex_http_requests_total", "counter", "HTTP requests answered, by method, route and status code.",
               (f"flex_http_requests_total{_labels(method=m, route=r, code=c)} {n}"
                for (m, r, c), n in sorted(self.requests.items())))
        samples: list[str] = []
        for (m, r), counts in sorted(self.buckets.items()):
            running = 0
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                running += n
                samples.append(f"flex_http_request_duration_seconds_bucket{_labels(method=m, route=r, le=bound)} "
                               f"{running}")
            samples.append(f"flex_http_request_duration_seconds_sum{_labels(method=m, route=r)} "
                           f"{self.sums[(m, r)]:.6f}")
            samples.append(f"flex_http_request_duration_seconds_count{_labels(method=m, route=r)} {running}")
        family("flex_http_request_duration_seconds", "histogram",
               "Seconds from a request's arrival to its response's first byte.", samples)
        family("flex_watchers", "gauge", "Watch streams open on this process.", [f"flex_watchers {watchers}"])
        family("flex_environments", "gauge", "Environments, by status phase.",
               (f"flex_environments{_labels(phase=p)} {n}" for p, n in sorted(environments.items())))
        family("flex_runners", "gauge", "Runners, by state.",
               (f"flex_runners{_labels(state=s)} {n}" for s, n in sorted(runners.items())))
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Counts each HTTP request under its route template (``/api/v1/environments/{name}``), never its path,
    so names in URLs neither leak into metrics nor multiply the series."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = False

        async def timed(message: Message) -> None:
            nonlocal seen
            if message["type"] == "http.response.start" and not seen:
                seen = True
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                self.metrics.observe(scope["method"], path, int(message["status"]), time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed)
