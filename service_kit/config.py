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


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise SystemExit(f"environment variable {name} must be an integer, got {raw!r}") from error


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


@dataclass(frozen=True)
class Settings:
    """Everything a service can be told. `from_env` is the only reader of os.environ."""

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
