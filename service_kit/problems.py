"""RFC 9457 problem details: the one error path of every service."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, has_request_context, json
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from werkzeug.exceptions import HTTPException, MethodNotAllowed

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://chatsys.example/problems/"


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        kind: str | None = None,
        headers: dict | None = None,
        extra: dict | None = None,
        limit: str | None = None,
    ):
        """`limit`: the setting that refused the request, when a limit did (counted in
        chatsys_refusals_total and named in the request's log line)."""
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail or title
        self.kind = kind or title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra or {}
        self.limit = limit


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str | None = None,
    headers: dict | None = None,
    extra: dict | None = None,
) -> Response:
    body = {
        "type": PROBLEM_TYPE_BASE + (kind or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra or {})
    if has_request_context() and "request_id" in g:
        # The id of the request in every log line about it (docs/observability.md).
        body["request_id"] = g.request_id
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if status == 401 and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = 'Bearer realm="chatsys"'
    return response


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="chatsys", error="invalid_token"'}
    )


def bad_request(detail: str, errors: list | None = None) -> Problem:
    return Problem(400, "Bad Request", detail, kind="invalid-request", extra={"errors": errors} if errors else None)


def unavailable(detail: str, retry_after: int = 1) -> Problem:
    return Problem(503, "Service Unavailable", detail, headers={"Retry-After": str(retry_after)})


_DATABASE_DOWN = (ServerSelectionTimeoutError, ConnectionFailure, NetworkTimeout, ExecutionTimeout)
# FerretDB answers InternalError (code 1) when its own storage fails under it: a PostgreSQL
# it cannot reach (`failed to connect ...`, `unexpected EOF`, during a failover) or a
# SQLite file it cannot write. The database is down for that moment, as far as a client
# can tell: 503 with Retry-After, logged as an error with the database's message.
_INTERNAL_ERROR = 1


def database_down(error: PyMongoError) -> bool:
    return isinstance(error, _DATABASE_DOWN) or (isinstance(error, OperationFailure) and error.code == _INTERNAL_ERROR)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(error: Problem):
        if error.limit is not None:
            g.refused_by = error.limit
            if app.config["SETTINGS"].metrics_enabled:
                from service_kit.metrics import REFUSALS

                REFUSALS.labels(error.limit).inc()
        return problem_response(
            error.status, error.title, error.detail, kind=error.kind, headers=error.headers, extra=error.extra
        )

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        headers = {}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return problem_response(error.code or 500, error.name, error.description or error.name, headers=headers)

    @app.errorhandler(PyMongoError)
    def _database(error: PyMongoError):
        if database_down(error):
            if isinstance(error, OperationFailure):
                log.error("database failed: %s", error)
            else:
                log.warning("database unavailable: %s", error)
            return problem_response(
                503,
                "Service Unavailable",
                "The database is not answering; try again shortly.",
                headers={"Retry-After": "1"},
            )
        log.exception("database error")
        return problem_response(500, "Internal Server Error", "The request could not be completed.")

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unhandled error")
        return problem_response(500, "Internal Server Error", "The request could not be completed.")
