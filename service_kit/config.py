"""Configuration read from the environment, in one place, with safe local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

# The default ports, in one home for the Python code: the contract's public ports, which
# HAProxy owns (conf/haproxy/haproxy.cfg), and the ports the services listen on behind it
# (the first chat server's; the others follow it). The shell scripts' copy is
# scripts/lib/common.sh, and tests/fast/test_ports.py checks that every file agrees with these.
PUBLIC_PORTS = {"chat": 5000, "login": 4100, "profile": 4200}
DEFAULT_PORTS = {"chat": 4000, "login": 4101, "profile": 4201}


def _int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        accepted = "an integer"
        if minimum is not None and maximum is not None:
            accepted = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            accepted = f"an integer of {minimum} or more"
        raise SystemExit(f"environment variable {name} must be {accepted}, got {raw!r}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise SystemExit(f"environment variable {name} must be a number, got {raw!r}") from error


def switch_on(raw: str | None) -> bool:
    """An on/off setting: on unless it says off, 0 or false."""
    return (raw or "on").lower() not in ("off", "0", "false")


def _words(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    return default if raw is None else tuple(raw.split())


def _choice(name: str, default: str, accepted: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in accepted:
        raise SystemExit(f"environment variable {name} must be one of {', '.join(accepted)}, got {raw!r}")
    return raw.lower()


@dataclass(frozen=True)
class Settings:
    """Everything a service can be told. `from_env` is the only reader of os.environ, with
    ServerSettings.from_env below for gunicorn."""

    service: str
    port: int
    mongo_uri: str = "mongodb://127.0.0.1:27017/chatsys"
    mongo_timeout_seconds: float = 2.0
    login_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['login']}"
    login_connect_timeout: float = 0.5
    login_read_timeout: float = 2.0
    token_ttl_seconds: int = 3600
    token_cache_seconds: int = 30
    token_cache_size: int = 10000
    token_cache_enabled: bool = True
    validate_concurrency: int = 16
    scrypt_n: int = 2**14
    login_max_failures: int = 5
    login_max_failures_per_user: int = 50
    login_max_failures_per_address: int = 100
    login_failure_window_seconds: int = 300
    max_body_bytes: int = 32 * 1024
    registrations_per_address: int = 600
    registration_window_seconds: int = 600
    rooms_per_user: int = 20
    room_window_seconds: int = 3600
    max_rooms: int = 10000
    trusted_proxies: tuple[str, ...] = ("127.0.0.2",)
    cors_origins: tuple[str, ...] = ()
    wait_poll_seconds: float = 0.25
    metrics_enabled: bool = True
    access_log: bool = True

    @classmethod
    def from_env(cls, service: str) -> Settings:
        return cls(
            service=service,
            port=_int("PORT", DEFAULT_PORTS[service]),
            mongo_uri=os.environ.get("MONGO_URI") or cls.mongo_uri,
            mongo_timeout_seconds=_float("MONGO_TIMEOUT_SECONDS", cls.mongo_timeout_seconds),
            login_url=(os.environ.get("LOGIN_URL") or cls.login_url).rstrip("/"),
            login_connect_timeout=_float("LOGIN_CONNECT_TIMEOUT", cls.login_connect_timeout),
            login_read_timeout=_float("LOGIN_READ_TIMEOUT", cls.login_read_timeout),
            token_ttl_seconds=_int("TOKEN_TTL_SECONDS", cls.token_ttl_seconds),
            token_cache_seconds=_int("TOKEN_CACHE_SECONDS", cls.token_cache_seconds),
            token_cache_size=_int("TOKEN_CACHE_SIZE", cls.token_cache_size),
            token_cache_enabled=switch_on(os.environ.get("TOKEN_CACHE")),
            validate_concurrency=_int("VALIDATE_CONCURRENCY", cls.validate_concurrency),
            scrypt_n=_int("SCRYPT_N", cls.scrypt_n),
            login_max_failures=_int("LOGIN_MAX_FAILURES", cls.login_max_failures),
            login_max_failures_per_user=_int("LOGIN_MAX_FAILURES_PER_USER", cls.login_max_failures_per_user),
            login_max_failures_per_address=_int("LOGIN_MAX_FAILURES_PER_ADDRESS", cls.login_max_failures_per_address),
            login_failure_window_seconds=_int("LOGIN_FAILURE_WINDOW_SECONDS", cls.login_failure_window_seconds),
            registrations_per_address=_int("REGISTRATIONS_PER_ADDRESS", cls.registrations_per_address),
            registration_window_seconds=_int("REGISTRATION_WINDOW_SECONDS", cls.registration_window_seconds),
            rooms_per_user=_int("ROOMS_PER_USER", cls.rooms_per_user),
            room_window_seconds=_int("ROOM_WINDOW_SECONDS", cls.room_window_seconds),
            max_rooms=_int("MAX_ROOMS", cls.max_rooms),
            trusted_proxies=_words("TRUSTED_PROXIES", cls.trusted_proxies),
            cors_origins=tuple(origin for origin in os.environ.get("CORS_ORIGINS", "").split() if origin),
            wait_poll_seconds=_float("WAIT_POLL_SECONDS", cls.wait_poll_seconds),
            metrics_enabled=switch_on(os.environ.get("METRICS")),
            access_log=switch_on(os.environ.get("ACCESS_LOG")),
        )

    @property
    def instance(self) -> str:
        return f"{self.service}@{self.port}"


# The app modules gunicorn is given (`gunicorn -c conf/gunicorn.conf.py chat_service.wsgi:app`).
APP_MODULES = {f"{service}_service.wsgi:app": service for service in DEFAULT_PORTS}
WORKER_CLASSES = ("gevent", "gthread", "sync")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def service_of_app(app_module: str | None) -> str:
    """The service whose app module gunicorn was given, or a clear exit."""
    if app_module not in APP_MODULES:
        raise SystemExit(f"gunicorn must be given one of {', '.join(APP_MODULES)} as its app, got {app_module!r}")
    return APP_MODULES[app_module]


@dataclass(frozen=True)
class ServerSettings:
    """What gunicorn is told, read by `from_env` like the services' Settings: the process
    level (conf/gunicorn.conf.py turns these into gunicorn's settings). A bad value stops
    gunicorn before it starts, with one line naming the variable and what it accepts."""

    service: str
    port: int
    host: str = "127.0.0.1"
    worker_class: str = "gthread"
    workers: int = 2
    threads: int = 4
    worker_connections: int = 1000
    keepalive: int = 75
    timeout: int = 30
    backlog: int = 2048
    read_timeout: int = 3
    access_log: str | None = None
    log_level: str = "info"
    log_max_bytes: int = 50 * 2**20
    log_keep: int = 5
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    metrics_server: str = ""

    @classmethod
    def from_env(cls, service: str) -> ServerSettings:
        port = _int("PORT", DEFAULT_PORTS[service], 1, 65535)
        metrics_port = _int("METRICS_PORT", 0, 0, 65535)
        if not metrics_port and os.environ.get("METRICS_PORT_OFFSET"):
            metrics_port = port + _int("METRICS_PORT_OFFSET", 0, 1, 65535 - port)
        return cls(
            service=service,
            port=port,
            # Loopback by default: clients reach the services through HAProxy.
            host=os.environ.get("SERVICE_HOST") or cls.host,
            # Chat waits on the database and the login service (gevent); login hashes with
            # scrypt, which would stall every greenlet of its worker (conf/gunicorn.conf.py).
            worker_class=_choice("GUNICORN_WORKER_CLASS", "gevent" if service == "chat" else "gthread", WORKER_CLASSES),
            workers=_int("GUNICORN_WORKERS", cls.workers, 1),
            threads=_int("GUNICORN_THREADS", cls.threads, 1),
            worker_connections=_int("GUNICORN_WORKER_CONNECTIONS", cls.worker_connections, 1),
            keepalive=_int("GUNICORN_KEEPALIVE", cls.keepalive, 0),
            timeout=_int("GUNICORN_TIMEOUT", cls.timeout, 0),
            backlog=_int("GUNICORN_BACKLOG", cls.backlog, 1),
            read_timeout=_int("GUNICORN_READ_TIMEOUT", cls.read_timeout, 1),
            access_log=os.environ.get("GUNICORN_ACCESS_LOG") or None,
            log_level=_choice("LOG_LEVEL", cls.log_level, LOG_LEVELS),
            log_max_bytes=_int("LOG_MAX_BYTES", cls.log_max_bytes, 0),
            log_keep=_int("LOG_KEEP", cls.log_keep, 0),
            metrics_enabled=switch_on(os.environ.get("METRICS")),
            metrics_host=os.environ.get("METRICS_HOST") or cls.metrics_host,
            metrics_port=metrics_port,
            # A name every sample served carries as `server`, where the scraper cannot give
            # one (compose: docker/entrypoint.sh sets the container's name).
            metrics_server=os.environ.get("METRICS_SERVER", ""),
        )
