"""The Prometheus metrics of a service, and the hooks that feed them.

Under gunicorn every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode); the master adds them up and serves them on the
loopback METRICS_PORT (service_kit/gunicorn_metrics.py). In-process (the fast tests) they
live in this process's default registry. docs/observability.md names each one and shows
the queries.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Request, request
from prometheus_client import Counter, Gauge, Histogram, values
from pymongo import monitoring


def _cache_pid() -> None:
    global _pid
    _pid = os.getpid()


_pid = 0
_cache_pid()
os.register_at_fork(after_in_child=_cache_pid)
if values.ValueClass._multiprocess:
    # Multiprocess mode asks for the process id at every write, to notice a fork; here a
    # system call costs about as much as the rest of the write. The id kept from the last
    # fork is the same number, without the call. (Set before the first metric is made:
    # each takes its value class when it is made.)
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _pid)

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


def route_of_request(current: Request | None = None) -> str:
    """The route template that matched (never the path itself: room names would make a
    series each), '(unmatched)' for a 404 or 405."""
    current = request if current is None else current
    rule = current.url_rule
    if rule is None:
        return "(unmatched)"
    if b"wait=" in current.query_string and current.args.get("wait", "0") not in ("", "0"):
        return f"{rule.rule} (wait)"
    return rule.rule


# The labelled children already made: labels() validates and locks on every call, which
# costs more than the observation itself.
_request_children: dict[tuple[str, str, str], Histogram] = {}


def _observe(environ: dict, status: str, seconds: float) -> None:
    # Flask's request object, still in place while the answer starts (it is cleared when
    # its context ends); None when the request failed before Flask made one.
    flask_request = environ.get("werkzeug.request")
    route = "(unmatched)" if flask_request is None else route_of_request(flask_request)
    key = (route, environ.get("REQUEST_METHOD", ""), status[:3])
    child = _request_children.get(key)
    if child is None:
        method = key[1] if key[1] in _METHODS else "other"
        child = _request_children.setdefault(key, REQUEST_SECONDS.labels(route, method, key[2]))
    child.observe(seconds)


class RequestTimer:
    """WSGI middleware around the app: counts the requests in flight, and times each from
    its arrival to the start of its answer, when the status is known and Flask's request
    still names the route. Cheaper per request than three Flask hooks that each reach the
    request and `g` through their context-local proxies."""

    def __init__(self, wsgi_app) -> None:
        self._wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()

        def start_and_observe(status, headers, exc_info=None):
            _observe(environ, status, time.perf_counter() - started)
            return start_response(status, headers, exc_info)

        IN_FLIGHT.inc()
        try:
            return self._wsgi_app(environ, start_and_observe)
        finally:
            IN_FLIGHT.dec()


def init_app(app: Flask) -> None:
    """Time every request and count those in flight."""
    # Flask's documented way to add WSGI middleware; mypy sees a method being replaced.
    app.wsgi_app = RequestTimer(app.wsgi_app)  # type: ignore[method-assign]


class DatabaseTimer(monitoring.CommandListener):
    """Times each database command (pymongo calls it in the thread that sent the command).
    A command's request id is unique within the process: it keys the command's operation
    and collection from its start to its end."""

    def __init__(self) -> None:
        self._started: dict[int, tuple[str, str]] = {}
        self._children: dict[tuple[str, str], Histogram] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get("collection" if name == "getMore" else name)
        self._started[event.request_id] = (name, target if isinstance(target, str) else "")

    def _observe(self, event) -> tuple[str, str] | None:
        key = self._started.pop(event.request_id, None)
        if key is not None:
            child = self._children.get(key)
            if child is None:
                child = self._children.setdefault(key, DATABASE_SECONDS.labels(*key))
            child.observe(event.duration_micros / 1e6)
        return key

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._observe(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        key = self._observe(event)
        if key is not None:
            DATABASE_ERRORS.labels(*key).inc()
