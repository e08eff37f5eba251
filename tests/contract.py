"""Assertions every contract test shares: problem+json shape, X-Instance, 401 shape."""

from __future__ import annotations

import re

import requests

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
