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
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Request, request
from prometheus_client import Counter, Gauge, Histogram, values
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.cursor import Cursor
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult


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
    "Database operations by the command they send and its collection, timed around the stores' calls.",
    ["operation", "collection"],
    buckets=_DATABASE_BUCKETS,
)
DATABASE_ERRORS = Counter(
    "chatsys_db_operation_errors_total",
    "Database operations that failed (a write refused for a taken unique key is an answer, not a failure).",
    ["operation", "collection"],
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


def _only_taken_keys(error: PyMongoError) -> bool:
    """Whether the database refused the write only because unique keys are taken."""
    if isinstance(error, DuplicateKeyError):
        return True
    if isinstance(error, BulkWriteError):
        details = error.details
        written = details.get("writeErrors") or [{}]
        return not details.get("writeConcernErrors") and all(each.get("code") == 11000 for each in written)
    return False


class _OperationTimer:
    """Observes one database operation's time in its histogram child, and counts it among
    the failed when it raised. A write the database refused because a unique key is taken
    is an answer the stores expect (a claim held, a name taken), not a failure."""

    __slots__ = ("_children", "_collection")

    def __init__(self, collection: str) -> None:
        self._collection = collection
        self._children: dict[str, Histogram] = {}

    def observe(self, operation: str, seconds: float) -> None:
        child = self._children.get(operation)
        if child is None:
            child = self._children.setdefault(operation, DATABASE_SECONDS.labels(operation, self._collection))
        child.observe(seconds)

    def failed(self, operation: str, error: BaseException) -> None:
        if isinstance(error, PyMongoError) and not _only_taken_keys(error):
            DATABASE_ERRORS.labels(operation, self._collection).inc()

    def call(self, operation: str, method: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        except BaseException as error:
            self.failed(operation, error)
            raise
        finally:
            self.observe(operation, time.perf_counter() - started)


class TimedCursor:
    """A find's cursor that times each batch it asks the database for: the first (`find`)
    and each further one (`getMore`), when iterating needs it."""

    __slots__ = ("_cursor", "_timer")

    def __init__(self, cursor: Cursor, timer: _OperationTimer) -> None:
        self._cursor = cursor
        self._timer = timer

    def sort(self, *args: Any, **kwargs: Any) -> TimedCursor:
        self._cursor.sort(*args, **kwargs)
        return self

    def skip(self, skip: int) -> TimedCursor:
        self._cursor.skip(skip)
        return self

    def limit(self, limit: int) -> TimedCursor:
        self._cursor.limit(limit)
        return self

    def __iter__(self) -> TimedCursor:
        return self

    def __next__(self) -> Any:
        cursor = self._cursor
        cursor_id, retrieved = cursor.cursor_id, cursor.retrieved
        started = time.perf_counter()
        try:
            return next(cursor)
        except StopIteration:
            raise
        except BaseException as error:
            self._timer.failed("find" if cursor_id is None else "getMore", error)
            raise
        finally:
            # No id yet: this call sent the query. A batch arrived, or the server's cursor
            # closed: it sent a getMore. Otherwise it took a document already fetched.
            if cursor_id is None or cursor.retrieved != retrieved or cursor.cursor_id != cursor_id:
                self._timer.observe("find" if cursor_id is None else "getMore", time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class TimedCollection:
    """A collection whose operations each observe their time in
    chatsys_db_operation_duration_seconds, labelled with the collection and the database
    command the method sends, by the names pymongo's command monitoring gives them (the
    series mean what they meant when that timed them). Whatever else a caller reaches
    passes through to pymongo's collection, untimed."""

    __slots__ = ("_collection", "_timer")

    def __init__(self, collection: Collection) -> None:
        self._collection = collection
        self._timer = _OperationTimer(collection.name)

    def find(self, *args: Any, **kwargs: Any) -> TimedCursor:
        return TimedCursor(self._collection.find(*args, **kwargs), self._timer)

    def find_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._timer.call("find", self._collection.find_one, args, kwargs)

    def insert_one(self, *args: Any, **kwargs: Any) -> InsertOneResult:
        return self._timer.call("insert", self._collection.insert_one, args, kwargs)

    def insert_many(self, *args: Any, **kwargs: Any) -> InsertManyResult:
        return self._timer.call("insert", self._collection.insert_many, args, kwargs)

    def update_one(self, *args: Any, **kwargs: Any) -> UpdateResult:
        return self._timer.call("update", self._collection.update_one, args, kwargs)

    def update_many(self, *args: Any, **kwargs: Any) -> UpdateResult:
        return self._timer.call("update", self._collection.update_many, args, kwargs)

    def delete_one(self, *args: Any, **kwargs: Any) -> DeleteResult:
        return self._timer.call("delete", self._collection.delete_one, args, kwargs)

    def delete_many(self, *args: Any, **kwargs: Any) -> DeleteResult:
        return self._timer.call("delete", self._collection.delete_many, args, kwargs)

    def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
        return self._timer.call("findAndModify", self._collection.find_one_and_update, args, kwargs)

    def count_documents(self, *args: Any, **kwargs: Any) -> int:
        return self._timer.call("aggregate", self._collection.count_documents, args, kwargs)

    def create_index(self, *args: Any, **kwargs: Any) -> str:
        return self._timer.call("createIndexes", self._collection.create_index, args, kwargs)

    def drop_index(self, *args: Any, **kwargs: Any) -> None:
        self._timer.call("dropIndexes", self._collection.drop_index, args, kwargs)

    def index_information(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._timer.call("listIndexes", self._collection.index_information, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


class TimedDatabase:
    """The app's database as `service_kit.database.db()` hands it out with metrics on, in
    place of pymongo's: its collections are TimedCollections (one per name, kept), and its
    commands are timed by their name, the collection they name if any. Whatever else a
    caller reaches passes through to pymongo's database, untimed."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._collections: dict[str, TimedCollection] = {}
        self._commands = _OperationTimer("")

    @property
    def client(self) -> MongoClient:
        return self._database.client

    @property
    def name(self) -> str:
        return self._database.name

    def __getitem__(self, name: str) -> TimedCollection:
        collection = self._collections.get(name)
        if collection is None:
            collection = self._collections.setdefault(name, TimedCollection(self._database[name]))
        return collection

    def __getattr__(self, name: str) -> Any:
        # As pymongo's Database: its own methods and properties, else a collection.
        if name.startswith("_"):
            raise AttributeError(name)
        if hasattr(Database, name):
            return getattr(self._database, name)
        collection = self[name]
        self.__dict__[name] = collection  # an attribute from now on: no call here next time
        return collection

    def command(self, command: str | Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        name, target = (command, None) if isinstance(command, str) else next(iter(command.items()))
        timer = self[target]._timer if isinstance(target, str) else self._commands
        return timer.call(name, self._database.command, (command, *args), kwargs)

    def list_collection_names(self, *args: Any, **kwargs: Any) -> list[str]:
        return self._commands.call("listCollections", self._database.list_collection_names, args, kwargs)

    def drop_collection(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self[name]._timer.call("drop", self._database.drop_collection, (name, *args), kwargs)
