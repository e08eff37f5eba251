"""Assertions every contract test shares: problem+json shape, X-Instance, 401 shape; and,
in conformance mode, how the tests honour the target's rate limits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]

INSTANCE = re.compile(r"^(login|profile|chat)@\d+$")


def assert_problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:300]}"
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers["Content-Type"]
    body = response.json()
    assert isinstance(body.get("type"), str) and body["type"]
    assert isinstance(body.get("title"), str) and body["title"]
    assert body.get("status") == status
    assert isinstance(body.get("detail"), str)
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    if status == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    return body


def assert_instance(response: requests.Response, service: str) -> str:
    instance = response.headers.get("X-Instance", "")
    assert INSTANCE.match(instance), f"bad X-Instance {instance!r}"
    assert instance.startswith(service + "@")
    return instance


def json_post(url: str, body, **kwargs) -> requests.Response:
    return requests.post(url, json=body, timeout=10, **kwargs)


# Authorization headers that must get a 401 with a challenge: none, empty, a scheme alone,
# another scheme, an unknown token, one beyond the length bound, and two malformed ones.
BAD_AUTHORIZATION_HEADERS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Bearer not-a-real-token",
    "Bearer " + "a" * 600,
    "Bearer a b",
    "Bearer\tabc",
]


# --- conformance mode: the target's rate limits ----------------------------------------

# A 429 whose Retry-After is at most this many seconds is a rate that passes soon (such as
# HAProxy's logins per address per 10 s, or posts per token): the request is sent again
# once the wait is over, as the contract asks of clients. A longer one (a login lock of
# five minutes) is an answer for the test to judge.
RATE_LIMIT_WAIT_SECONDS = 15
RATE_LIMIT_RETRIES = 8
# Every 429 waited out, as "METHOD URL (Retry-After N s)", for the run's summary.
rate_limited: list[str] = []


def _short_retry_after(response: requests.Response) -> int | None:
    if response.status_code != 429:
        return None
    try:
        seconds = int(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= RATE_LIMIT_WAIT_SECONDS else None


def honour_retry_after() -> None:
    """Every requests session (requests.get and the like too) waits out short 429s."""
    send = requests.Session.send
    if getattr(send, "honours_retry_after", False):
        return

    def send_honouring_retry_after(self, request, **kwargs):
        for _ in range(RATE_LIMIT_RETRIES):
            response = send(self, request, **kwargs)
            seconds = _short_retry_after(response)
            if seconds is None:
                return response
            rate_limited.append(f"{request.method} {request.url} (Retry-After {seconds} s)")
            response.close()
            time.sleep(max(seconds, 1))
        return send(self, request, **kwargs)

    send_honouring_retry_after.honours_retry_after = True  # type: ignore[attr-defined]
    requests.Session.send = send_honouring_retry_after  # type: ignore[method-assign]


def assert_contract_suites_pass(login_url: str, profile_url: str, chat_url: str) -> None:
    """The contract suites in conformance mode (scripts/conformance.sh does the same), pointed
    at these URLs."""
    suites = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests" / "contract").glob("test_*_contract.py"))
    environment = {
        **os.environ,
        "CHATSYS_LOGIN_URL": login_url,
        "CHATSYS_PROFILE_URL": profile_url,
        "CHATSYS_CHAT_URL": chat_url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
