"""Accounts for the tests over HTTP: a unique name, and an account registered and logged in
on a login service (ours through the harness, or anyone's in conformance mode).

tests/lib/fast.py has the in-process twin (Flask's test client, no HTTP); the battle's
pre-flight (tools/loadtest/battle.py) keeps its own, which sends bursts and wants the 429s.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import requests


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@dataclass
class User:
    username: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register_and_login(login_url: str, username: str | None = None, password: str = "correct horse 1") -> User:
    username = username or unique_name()
    created = requests.post(f"{login_url}/users", json={"username": username, "password": password}, timeout=10)
    assert created.status_code == 201, created.text
    session = requests.post(f"{login_url}/login", json={"username": username, "password": password}, timeout=10)
    assert session.status_code == 200, session.text
    return User(username, password, session.json()["token"])
