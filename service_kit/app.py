"""The app factory every service starts from, and the endpoints every service answers."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable

import pymongo
from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from service_kit import database, logs, schema
from service_kit.config import Settings
from service_kit.problems import Problem, problem_response, register_error_handlers

health = Blueprint("health", __name__)
access_log = logging.getLogger("chatsys.access")
_SCHEMA = "chatsys.schema"


class SchemaCheck:
    """Whether the app's database carries the schema mark of this release (service_kit.schema).
    Read at start, then by /ready and by requests only until it is seen: once migrated, a
    database stays so, and the check costs nothing more."""

    def __init__(self) -> None:
        self.migrated = False
        self.version = 0

    def check(self) -> bool:
        if not self.migrated:
            self.version = schema.version_of(database.db())
            self.migrated = self.version >= schema.SCHEMA_VERSION
        return self.migrated

    def problem(self) -> Problem:
        return Problem(
            503,
            "Service Unavailable",
            schema.not_migrated_detail(self.version),
            kind="database-not-migrated",
            headers={"Retry-After": "5"},
        )


def _schema_check() -> SchemaCheck:
    return current_app.extensions[_SCHEMA]


def _check_schema_at_start(app: Flask) -> None:
    check = SchemaCheck()
    app.extensions[_SCHEMA] = check
    with app.app_context():
        try:
            with pymongo.timeout(1.0):
                check.check()
        except Exception:  # the database is not there yet: /ready says so, and reads the mark again
            app.logger.warning("the database did not answer at start; /ready answers 503 until it does and is migrated")
            return
    if not check.migrated:
        app.logger.warning("%s; /ready answers 503 until then", schema.not_migrated_detail(check.version))


def _refuse_until_migrated() -> None:
    """No route runs on a database without this release's collections and indexes (a missing
    unique index would let two look-alike names in). One read of the mark per request, only
    until it is seen."""
    if request.blueprint not in (None, health.name) and not _schema_check().check():
        raise _schema_check().problem()


@health.get("/health")
def health_check():
    settings = current_app.config["SETTINGS"]
    return jsonify(status="ok", service=settings.service, instance=settings.instance)


@health.get("/ready")
def readiness_check():
    try:
        database.ping(timeout_seconds=1.0)
    except Exception:  # any failure to answer within 1 s means "not ready"
        return problem_response(
            503, "Service Unavailable", "The database did not answer a ping within 1 s.", headers={"Retry-After": "1"}
        )
    check = _schema_check()
    try:
        with pymongo.timeout(1.0):
            migrated = check.check()
    except Exception:  # as the ping: no answer within 1 s
        migrated = None
    if migrated is None:
        return problem_response(
            503, "Service Unavailable", "The database did not answer within 1 s.", headers={"Retry-After": "1"}
        )
    if not migrated:
        problem = check.problem()
        return problem_response(503, problem.title, problem.detail, kind=problem.kind, headers=problem.headers)
    settings = current_app.config["SETTINGS"]
    return jsonify(status="ready", service=settings.service, instance=settings.instance)


def _add_common_headers(response):
    settings = current_app.config["SETTINGS"]
    response.headers["X-Instance"] = settings.instance
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    return response


def _begin_request() -> None:
    """The request's id (from HAProxy's X-Request-ID, else a new one) for its log lines, its
    answer and its problem body; and its start, for its duration."""
    g.started = time.perf_counter()
    g.request_id = logs.accept_request_id(request.headers.get("X-Request-ID"))
    g.request_id_token = logs.request_id.set(g.request_id)


def _end_request(response):
    response.headers["X-Request-ID"] = g.request_id
    settings = current_app.config["SETTINGS"]
    # HAProxy's health checks (several a second) are left out while they pass.
    if settings.access_log and not (request.path in ("/health", "/ready") and response.status_code < 400):
        from service_kit.metrics import route_of_request  # the same route names as the metrics

        access_log.info(
            "request",
            extra={
                "method": request.method,
                "route": route_of_request(),
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - g.started) * 1000, 2),
                "user": g.get("username"),  # never the token
                "client": request.remote_addr,
                "server": settings.instance,
                # The setting that refused the request, when a limit did.
                **({"limit": g.refused_by} if "refused_by" in g else {}),
            },
        )
    return response


def _forget_request(_error) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        logs.request_id.reset(token)


def _cors(response):
    """CORS headers only for the origins CORS_ORIGINS names; none by default."""
    origin = request.headers.get("Origin")
    allowed = current_app.config["SETTINGS"].cors_origins
    if origin and (origin in allowed or "*" in allowed):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Idempotency-Key"
            response.headers["Access-Control-Max-Age"] = "600"
        response.headers["Access-Control-Expose-Headers"] = "X-Instance, X-Request-ID, Retry-After, WWW-Authenticate"
    return response


class TrustedProxyFix:
    """The client's address from X-Forwarded-For, but only on a connection from one of the
    trusted proxies (TRUSTED_PROXIES: addresses or networks; HAProxy connects to login and
    profile from 127.0.0.2). Anyone else's X-Forwarded-For is dropped unread, so a client
    reaching a service port directly cannot choose the address its limits count against."""

    def __init__(self, wsgi_app, trusted: Iterable[str]):
        self._direct = wsgi_app
        self._proxied = ProxyFix(wsgi_app, x_for=1, x_proto=0, x_host=0, x_port=0, x_prefix=0)
        self._trusted = [ipaddress.ip_network(entry, strict=False) for entry in trusted]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def __call__(self, environ, start_response):
        if self._trusted and self._is_trusted(environ.get("REMOTE_ADDR", "")):
            return self._proxied(environ, start_response)
        environ.pop("HTTP_X_FORWARDED_FOR", None)
        return self._direct(environ, start_response)


def create_service_app(
    service: str,
    settings: Settings | None,
    blueprints: Iterable[Blueprint],
    setup: Callable[[Flask], None] | None = None,
) -> Flask:
    """Build a service app: settings, database, errors, health, X-Instance, then its own parts."""
    settings = settings or Settings.from_env(service)
    app = Flask(service)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    json_provider = DefaultJSONProvider(app)
    json_provider.sort_keys = False  # fields in the contract's order
    app.json = json_provider
    # Flask's documented way to add WSGI middleware; mypy sees a method being replaced.
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    logs.configure()

    database.init_app(app)
    register_error_handlers(app)
    app.before_request(_begin_request)
    app.before_request(_refuse_until_migrated)
    app.teardown_request(_forget_request)
    if settings.metrics_enabled:
        from service_kit import metrics  # not at the top: prometheus-client reads its folder at import

        metrics.init_app(app)
    # Flask runs after_request hooks last registered first: the request's line is written
    # once the headers below are set.
    app.after_request(_end_request)
    app.after_request(_add_common_headers)
    app.after_request(_cors)
    app.register_blueprint(health)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    if setup is not None:
        setup(app)
    _check_schema_at_start(app)
    return app
