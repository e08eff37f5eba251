"""HTTP client of the three services, as in the service contract.

Every failure leaves this module as a `ServiceError` carrying one line for the user:
the problem's `detail`, or which service could not be reached.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# (connect, read) in seconds: a dead host is noticed fast, a busy server gets time to answer.
TIMEOUT = (3.05, 15)
# A message is sent at most this many times, always with the same Idempotency-Key.
SEND_ATTEMPTS = 4
# Between attempts: at once, then 1 s, then 2 s (urllib3 doubles from the second retry on),
# or as long as a 5xx answer's Retry-After asks, but never longer than this.
SEND_BACKOFF_SECONDS = 0.5
SEND_RETRY_AFTER_MAX = 5

LOGIN_HINT = "not logged in or session expired; run: python -m chat_client login USER"


class ServiceError(Exception):
    """A request that did not succeed; str() is the one line to show."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth trying again: the network failed or a server had trouble."""
        return self.status is not None and self.status >= 500


class Unreachable(ServiceError):
    """No HTTP answer at all: refused, timed out or cut off."""

    @property
    def transient(self) -> bool:
        return True


class NotLoggedIn(ServiceError):
    def __init__(self):
        super().__init__(LOGIN_HINT, 401)


class _SendRetry(Retry):
    """Retries on no answer (refused, cut off, timed out) and on any 5xx, and on nothing
    else: a 429 or 413 with Retry-After is an answer about this request, not a failure."""

    RETRY_AFTER_STATUS_CODES: frozenset[int] = frozenset()


def send_retry() -> Retry:
    return _SendRetry(
        total=SEND_ATTEMPTS - 1,
        allowed_methods=frozenset({"POST"}),
        status_forcelist=frozenset(range(500, 600)),
        backoff_factor=SEND_BACKOFF_SECONDS,
        retry_after_max=SEND_RETRY_AFTER_MAX,
        raise_on_status=False,
    )


@dataclass(frozen=True)
class ServiceUrls:
    login: str
    profile: str
    chat: str

    def base(self, service: str) -> str:
        return getattr(self, service)


def new_idempotency_key() -> str:
    # token_urlsafe only uses A-Z, a-z, 0-9, - and _, which is what the contract allows.
    return secrets.token_urlsafe(24)


def _segment(name: str) -> str:
    """A name as one path segment: a slash or space typed by the user cannot change the route."""
    return quote(name, safe="")


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _failure(service: str, base: str, response: requests.Response) -> ServiceError:
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = str(body.get("detail") or body.get("title") or "")
    except ValueError:
        pass
    if not detail:
        detail = f"the {service} service at {base} answered HTTP {response.status_code}"
    detail = " ".join(detail.split())  # one line, whatever the server sent
    retry_after = _retry_after(response)
    if response.status_code == 429 and retry_after is not None:
        detail += f" (try again in {retry_after:g} s)"
    return ServiceError(detail, response.status_code, retry_after)


class ChatsysClient:
    """One user's view of login, profile and chat; `token` is None until logged in."""

    def __init__(self, urls: ServiceUrls, token: str | None = None):
        self.urls = urls
        self.token = token
        self._http = requests.Session()
        self._http.headers["User-Agent"] = "chatsys-terminal-client/1"
        # Posts of messages, and only they, are retried: they carry an Idempotency-Key.
        self._sending = requests.Session()
        self._sending.headers["User-Agent"] = "chatsys-terminal-client/1"
        for scheme in ("http://", "https://"):
            self._sending.mount(scheme, HTTPAdapter(max_retries=send_retry()))

    def close(self) -> None:
        self._http.close()
        self._sending.close()

    def _request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        authenticated: bool = True,
        json: dict | None = None,
        params: dict | None = None,
        headers: dict | None = None,
        timeout: tuple[float, float] = TIMEOUT,
        http: requests.Session | None = None,
    ) -> dict[str, Any]:
        """The answer's JSON object ({} for an answer without a body), else a ServiceError."""
        base = self.urls.base(service)
        headers = dict(headers or {})
        if authenticated:
            if not self.token:
                raise NotLoggedIn()
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = (http or self._http).request(
                method, base + path, json=json, params=params, headers=headers, timeout=timeout
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema):
            raise ServiceError(f"the {service} URL {base!r} is not a valid http(s) URL") from None
        except requests.RequestException:
            raise Unreachable(f"cannot reach the {service} service at {base}") from None
        if response.status_code == 401 and authenticated:
            raise NotLoggedIn()
        if response.status_code >= 400:
            raise _failure(service, base, response)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ServiceError(
                f"the {service} service at {base} sent an answer that is not a JSON object", response.status_code
            )
        return body

    # login service

    def register(self, username: str, password: str) -> dict:
        return self._request(
            "login", "POST", "/users", authenticated=False, json={"username": username, "password": password}
        )

    def login(self, username: str, password: str) -> dict:
        session = self._request(
            "login", "POST", "/login", authenticated=False, json={"username": username, "password": password}
        )
        self.token = session["token"]
        return session

    def validate(self) -> dict:
        return self._request("login", "GET", "/validate")

    def logout(self) -> None:
        self._request("login", "POST", "/logout")

    # profile service

    def profile(self, username: str) -> dict:
        return self._request("profile", "GET", f"/profiles/{_segment(username)}")

    def update_profile(self, username: str, changes: dict) -> dict:
        return self._request("profile", "PUT", f"/profiles/{_segment(username)}", json=changes)

    # chat service

    def rooms(self) -> list[dict]:
        return self._request("chat", "GET", "/rooms")["rooms"]

    def create_room(self, name: str) -> dict:
        return self._request("chat", "POST", "/rooms", json={"name": name})

    def messages(self, room: str, after: int | None = None, limit: int | None = None, wait: int | None = None) -> dict:
        """A page of messages; with `wait` (and `after`) the service may hold the request up
        to that many seconds until a message arrives (contract v1.1)."""
        params = {
            name: value for name, value in (("after", after), ("limit", limit), ("wait", wait)) if value is not None
        }
        timeout = (TIMEOUT[0], TIMEOUT[1] + wait) if wait else TIMEOUT
        return self._request("chat", "GET", f"/rooms/{_segment(room)}/messages", params=params, timeout=timeout)

    def send(self, room: str, text: str, key: str | None = None) -> dict:
        """Post a message; on a network error or 5xx, post again with the same key, which the
        chat service stores at most once, so a lost answer never turns into a double post."""
        headers = {"Idempotency-Key": key or new_idempotency_key()}
        return self._request(
            "chat",
            "POST",
            f"/rooms/{_segment(room)}/messages",
            json={"text": text},
            headers=headers,
            http=self._sending,
        )
