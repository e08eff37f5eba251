"""The app factory every service starts from, and the endpoints every service answers."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from service_kit import database
from service_kit.config import Settings
from service_kit.problems import problem_response, register_error_handlers

health = Blueprint("health", __name__)


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
        response.headers["Access-Control-Expose-Headers"] = "X-Instance, Retry-After, WWW-Authenticate"
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    database.init_app(app)
    register_error_handlers(app)
    app.after_request(_add_common_headers)
    app.after_request(_cors)
    app.register_blueprint(health)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    if setup is not None:
        setup(app)
    return app
