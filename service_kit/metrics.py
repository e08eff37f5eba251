"""The Prometheus metrics of a service, and the hooks that feed them.

Under gunicorn every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode); the master adds them up and serves them on the
loopback METRICS_PORT (service_kit/gunicorn_metrics.py). In-process (the fast tests) they
live in this process's default registry. docs/observability.md names each one and shows
the queries.
"""

from __future__ import annotations

import time

from flask import Flask, g, request
from prometheus_client import Counter, Gauge, Histogram
from pymongo import monitoring

# Short requests take milliseconds; long polls up to their 30 s wait.
_REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DATABASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

REQUEST_SECONDS = Histogram(
    "chatsys_http_request_duration_seconds",
    "Time from the request's arrival in the app to its answer, by route template, method and status. "
    "Long polls (wait > 0) have their own route: '<template> (wait)'.",
    ["route", "method", "status"],
    buckets=_REQUEST_BUCKETS,
)
IN_FLIGHT = Gauge("chatsys_http_requests_in_flight", "Requests the app is serving now.", multiprocess_mode="livesum")
DATABASE_SECONDS = Histogram(
    "chatsys_db_operation_duration_seconds",
    "Database commands by operation and collection, as pymongo's command monitoring times them.",
    ["operation", "collection"],
    buckets=_DATABASE_BUCKETS,
)
DATABASE_ERRORS = Counter(
    "chatsys_db_operation_errors_total", "Database commands that failed.", ["operation", "collection"]
)
TOKEN_CACHE = Counter(
    "chatsys_token_cache_lookups_total", "Token checks answered from the token cache (hit) or not (miss).", ["result"]
)
TOKEN_CACHE_HITS = TOKEN_CACHE.labels(result="hit")
TOKEN_CACHE_MISSES = TOKEN_CACHE.labels(result="miss")
LONG_POLLS_WAITING = Gauge(
    "chatsys_long_polls_waiting", "Requests waiting for new messages (wait > 0).", multiprocess_mode="livesum"
)
ROOM_WATCHERS = Gauge(
    "chatsys_room_watchers", "Rooms a watcher polls for the waiting requests.", multiprocess_mode="livesum"
)
WATCHER_POLLS = Counter(
    "chatsys_watcher_polls_total", "Database polls of the room watchers; failed ones apart.", ["outcome"]
)
REFUSALS = Counter(
    "chatsys_refusals_total", "Requests a service refused because a limit was reached, by limit.", ["limit"]
)


def route_of_request() -> str:
    """The route template that matched (never the path itself: room names would make a
    series each), '(unmatched)' for a 404 or 405."""
    rule = request.url_rule
    if rule is None:
        return "(unmatched)"
    if request.args.get("wait", "0") not in ("", "0"):
        return f"{rule.rule} (wait)"
    return rule.rule


def _begin() -> None:
    IN_FLIGHT.inc()
    g.metrics_in_flight = True


def _observe(response):
    method = request.method if request.method in _METHODS else "other"
    REQUEST_SECONDS.labels(route_of_request(), method, str(response.status_code)).observe(
        time.perf_counter() - g.started
    )
    return response


def _end(_error) -> None:
    if g.pop("metrics_in_flight", False):
        IN_FLIGHT.dec()


def init_app(app: Flask) -> None:
    """Time every request and count those in flight (after service_kit.app has set g.started)."""
    app.before_request(_begin)
    app.after_request(_observe)
    app.teardown_request(_end)


class DatabaseTimer(monitoring.CommandListener):
    """Times each database command (pymongo calls it in the thread that sent the command)."""

    def __init__(self) -> None:
        self._started: dict[tuple, tuple[str, str]] = {}

    @staticmethod
    def _key(event) -> tuple:
        return (event.request_id, event.connection_id, event.operation_id)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        target = command.get(event.command_name)
        if event.command_name == "getMore":
            target = command.get("collection")
        self._started[self._key(event)] = (event.command_name, target if isinstance(target, str) else "")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        started = self._started.pop(self._key(event), None)
        if started is not None:
            DATABASE_SECONDS.labels(*started).observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        started = self._started.pop(self._key(event), None)
        if started is not None:
            DATABASE_SECONDS.labels(*started).observe(event.duration_micros / 1e6)
            DATABASE_ERRORS.labels(*started).inc()
