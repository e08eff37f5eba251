"""Bearer-token authentication: parsing, and the client of the login service's /validate.

The login service checks tokens against its own database (`LocalTokenCheck`); profile and
chat ask the login service over HTTP (`LoginServiceClient`) through a keep-alive pool with
connect and read timeouts, a bounded number of calls in flight, and the token cache.
"""

from __future__ import annotations

import functools
import re
import threading
from datetime import datetime

import requests
from flask import current_app, g, request
from requests.adapters import HTTPAdapter

from service_kit import logs
from service_kit.problems import Problem, unauthorized, unavailable
from service_kit.token_cache import TokenCache, token_digest

# RFC 6750 b64token, with a length bound so nobody makes us hash megabytes. The scheme name
# is case-insensitive (RFC 9110, section 11.1).
_BEARER = re.compile(r"(?i:Bearer) +([A-Za-z0-9\-._~+/]{1,512}=*)")


def bearer_token() -> str:
    header = request.headers.get("Authorization")
    if not header:
        raise unauthorized("Send Authorization: Bearer <token>.")
    match = _BEARER.fullmatch(header.strip())
    if not match:
        raise unauthorized("The Authorization header must be 'Bearer <token>'.")
    return match.group(1)


def parse_timestamp(text) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class LoginServiceClient:
    """Validates tokens by calling GET {LOGIN_URL}/validate, with the token cache in front."""

    def __init__(self, settings):
        self._url = settings.login_url + "/validate"
        self._timeout = (settings.login_connect_timeout, settings.login_read_timeout)
        self._session = requests.Session()
        # Names the calling process in the login service's access log.
        self._session.headers["User-Agent"] = f"chatsys-{settings.instance}"
        pool = max(4, settings.validate_concurrency)
        self._session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=pool, max_retries=0))
        self._session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=pool, max_retries=0))
        self._in_flight = threading.BoundedSemaphore(max(1, settings.validate_concurrency))
        self._pending: dict[str, threading.Event] = {}
        self._pending_lock = threading.Lock()
        self.cache = TokenCache(
            settings.token_cache_size if settings.token_cache_enabled else 0, settings.token_cache_seconds
        )
        self._metrics = None
        if settings.metrics_enabled:
            from service_kit import metrics

            self._metrics = metrics

    def _count_lookup(self, hit: bool) -> None:
        if self._metrics is not None:
            (self._metrics.TOKEN_CACHE_HITS if hit else self._metrics.TOKEN_CACHE_MISSES).inc()

    def username_for(self, token: str) -> str:
        digest = token_digest(token)
        for attempt in range(2):
            cached = self.cache.get(digest)
            if attempt == 0:
                self._count_lookup(cached is not None)
            if cached is not None:
                return self._answer(cached.username)
            with self._pending_lock:
                waiting_on = self._pending.get(digest)
                if waiting_on is None:
                    done = self._pending[digest] = threading.Event()
            if waiting_on is None:
                try:
                    return self._answer(self._ask_login_service(token, digest))
                finally:
                    with self._pending_lock:
                        del self._pending[digest]
                    done.set()
            # Another thread is asking about this very token: share its answer.
            waiting_on.wait(sum(self._timeout))
        return self._answer(self._ask_login_service(token, digest))

    @staticmethod
    def _answer(username: str | None) -> str:
        if username is None:
            raise unauthorized("The token is unknown, expired or revoked.")
        return username

    def _ask_login_service(self, token: str, digest: str) -> str | None:
        if not self._in_flight.acquire(timeout=self._timeout[1]):
            refusal = unavailable("Too many token checks in flight; try again shortly.")
            refusal.limit = "VALIDATE_CONCURRENCY"
            raise refusal
        headers = {"Authorization": f"Bearer {token}"}
        request_id = logs.request_id.get()
        if request_id is not None:
            headers["X-Request-ID"] = request_id  # the login service's log line names it too
        try:
            response = self._session.get(self._url, headers=headers, timeout=self._timeout)
        except requests.RequestException:
            raise unavailable("The login service is not answering; try again shortly.") from None
        finally:
            self._in_flight.release()
        if response.status_code == 401:
            self.cache.put(digest, None, None)
            return None
        if response.status_code != 200:
            raise unavailable(f"The login service answered {response.status_code}; try again shortly.")
        try:
            body = response.json()
            username = body["username"]
        except (ValueError, KeyError, TypeError):
            raise unavailable("The login service answered something that is not a validation.") from None
        if not isinstance(username, str):
            raise unavailable("The login service answered something that is not a validation.")
        self.cache.put(digest, username, parse_timestamp(body.get("expires_at")))
        return username


def require_user(view):
    """Decorator: the request must carry a valid token; sets g.username."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer_token()
        g.token = token
        g.username = current_app.extensions["token_check"].username_for(token)
        return view(*args, **kwargs)

    return wrapper


__all__ = ["LoginServiceClient", "Problem", "bearer_token", "require_user", "parse_timestamp"]
