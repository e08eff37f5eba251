"""Who may do what: registration bounds, CORS only as configured, secrets only as hashes."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime

import pymongo
import pytest
import requests

from tests.conftest import service_env
from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name
from tests.lib.contract import assert_problem

pytestmark = pytest.mark.local


@pytest.fixture
def db(stack):
    """The stack's database, through a client closed at the end of the test."""
    with pymongo.MongoClient(stack.database.uri, serverSelectionTimeoutMS=3000) as client:
        yield client.get_default_database()


def test_registrations_per_client_address_are_bounded(processes):
    # A database of its own: the session's counts every registration the other tests made.
    database = harness.start_ferretdb(processes, name=f"ferretdb-registrations-{unique_name()}")
    login = harness.start_service(
        processes, "login", service_env(database, REGISTRATIONS_PER_ADDRESS=3, REGISTRATION_WINDOW_SECONDS=60)
    )
    for _ in range(3):
        response = requests.post(
            f"{login.url}/users", json={"username": unique_name(), "password": "long enough"}, timeout=10
        )
        assert response.status_code == 201
    refused = requests.post(
        f"{login.url}/users", json={"username": unique_name(), "password": "long enough"}, timeout=10
    )
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0


def test_cors_headers_only_for_configured_origins(processes, database):
    login = harness.start_service(processes, "login", service_env(database, CORS_ORIGINS="https://chat.example.org"))
    allowed = requests.options(
        f"{login.url}/login",
        headers={"Origin": "https://chat.example.org", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert allowed.headers.get("Access-Control-Allow-Origin") == "https://chat.example.org"
    assert "Authorization" in allowed.headers.get("Access-Control-Allow-Headers", "")
    other = requests.get(f"{login.url}/health", headers={"Origin": "https://evil.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_cors_headers_by_default(stack):
    response = requests.get(f"{stack.login_url}/health", headers={"Origin": "https://anywhere.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_security_headers_on_every_answer(stack, user):
    for response in (
        requests.get(f"{stack.login_url}/health", timeout=5),
        requests.get(f"{stack.profile_url}/profiles/{user.username}", headers=user.auth, timeout=5),
        requests.get(f"{stack.chat_url}/rooms", timeout=5),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_tokens_and_passwords_are_stored_only_as_hashes(stack, db):
    user = register_and_login(stack.login_url, password="a memorable secret")
    account = db.users.find_one({"_id": user.username})
    assert "a memorable secret" not in str(account)
    assert account["password_hash"].startswith("scrypt:16384:8:1$")
    assert db.tokens.find_one({"_id": user.token}) is None
    stored = db.tokens.find_one({"_id": hashlib.sha256(user.token.encode()).hexdigest()})
    assert stored is not None and stored["username"] == user.username
    assert user.token not in str(stored)


def test_a_password_hash_of_the_earlier_format_still_logs_in_and_is_upgraded(stack, db):
    """Hashes written before werkzeug.security's format (scrypt$N$r$p$salt$key, base64)
    keep working, and the first successful login replaces them."""
    username, password = unique_name().lower(), "written long ago"
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
    earlier = f"scrypt$16384$8$1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    db.users.insert_one(
        {"_id": username, "username": username, "password_hash": earlier, "created_at": datetime.now(UTC)}
    )

    def log_in(given: str) -> int:
        return requests.post(
            f"{stack.login_url}/login", json={"username": username, "password": given}, timeout=10
        ).status_code

    assert log_in("not what was written") == 401
    assert db.users.find_one({"_id": username})["password_hash"] == earlier, "a wrong password changes nothing"
    assert log_in(password) == 200
    upgraded = db.users.find_one({"_id": username})["password_hash"]
    assert upgraded.startswith("scrypt:16384:8:1$") and password not in upgraded
    assert log_in(password) == 200
    assert db.users.find_one({"_id": username})["password_hash"] == upgraded, "a current hash is kept"
