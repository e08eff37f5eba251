"""What the fast layer's tests share: apps built in-process on their own database of the
session's real FerretDB, a token check that asks the login app in-process, and the
problem+json assertions for Flask test responses.

The fast layer (`make test-fast`, marker `fast`) drives each service's routes through
`app.test_client()`: no gunicorn, no HAProxy, no HTTP between the services, but the real
app factories, the real database and the real login code behind every token.
"""

from __future__ import annotations

import pymongo
from flask import Flask
from werkzeug.test import TestResponse

from chat_service import create_app as create_chat_app
from login_service import create_app as create_login_app
from login_service.api import LocalTokenCheck
from profile_service import create_app as create_profile_app
from service_kit import database, migrate
from service_kit.config import Settings
from service_kit.problems import PROBLEM_TYPE_BASE
from tests.lib import harness
from tests.lib.accounts import User as Account
from tests.lib.accounts import unique_name

# A lower scrypt cost than the services' default (2**14) keeps the many registrations and
# logins of the fast layer quick; the hashing code is the same.
FAST_SCRYPT_N = 2**12


def fresh_database_uri(database: harness.Database, name: str, migrated: bool = True) -> str:
    """The URI of database `name` on the session's FerretDB, emptied first, then migrated
    (service_kit.migrate, as every deployment runs it before the services) unless told not."""
    uri = f"mongodb://127.0.0.1:{database.port}/{name}"
    client: pymongo.MongoClient = pymongo.MongoClient(uri)
    with client:
        client.drop_database(name)
    if migrated:
        migrate.migrate(uri)
    return uri


class InProcessTokenCheck:
    """The login service's own token check (`LocalTokenCheck`), run under the login app's
    context: what profile and chat ask of the login service over HTTP in a deployment,
    answered by the real login code and database without a server in between."""

    def __init__(self, login: Flask):
        self._login = login
        self._check = LocalTokenCheck()

    def username_for(self, token: str) -> str:
        with self._login.app_context():
            return self._check.username_for(token)


class Apps:
    """Builds the apps of a test or a module (fixtures `apps` and `module_apps`) and closes
    their database clients at its end: an app's client otherwise lives until the garbage
    collector finds it, and pymongo warns about it then (ResourceWarning)."""

    def __init__(self) -> None:
        self._built: list[Flask] = []

    def _keep(self, app: Flask) -> Flask:
        self._built.append(app)
        return app

    def login(self, uri: str, **settings) -> Flask:
        return self._keep(
            create_login_app(
                Settings(service="login", port=4101, mongo_uri=uri, **{"scrypt_n": FAST_SCRYPT_N, **settings})
            )
        )

    def profile(self, uri: str, login: Flask, **settings) -> Flask:
        app = self._keep(create_profile_app(Settings(service="profile", port=4201, mongo_uri=uri, **settings)))
        app.extensions["token_check"] = InProcessTokenCheck(login)
        return app

    def chat(self, uri: str, login: Flask | None = None, **settings) -> Flask:
        """A chat app; with `login`, it validates tokens with that login app in-process."""
        app = self._keep(create_chat_app(Settings(service="chat", port=4000, mongo_uri=uri, **settings)))
        if login is not None:
            app.extensions["token_check"] = InProcessTokenCheck(login)
        return app

    def close(self) -> None:
        for app in self._built:
            database.close(app)


def register_and_login(
    login: Flask, username: str | None = None, password: str = "correct horse 1", address: str = "127.0.0.1"
) -> Account:
    """tests.lib.accounts.register_and_login through Flask's test client, from `address`."""
    username = username or unique_name()
    client = login.test_client()
    environ = {"REMOTE_ADDR": address}
    created = client.post("/users", json={"username": username, "password": password}, environ_overrides=environ)
    assert created.status_code == 201, created.get_data(as_text=True)
    session = client.post("/login", json={"username": username, "password": password}, environ_overrides=environ)
    assert session.status_code == 200, session.get_data(as_text=True)
    return Account(username, password, session.get_json()["token"])


def assert_problem(response: TestResponse, status: int) -> dict:
    """The contract's problem+json answer with `status` (tests/lib/contract.py, for test responses)."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {text[:300]}"
    assert response.mimetype == "application/problem+json", response.content_type
    body = response.get_json(force=True)
    assert body["type"].startswith(PROBLEM_TYPE_BASE)
    assert isinstance(body["title"], str) and body["title"]
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert "Traceback" not in text
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
    return body


def field_errors(response: TestResponse) -> dict[str, str]:
    """{field: message} of a 400 that names fields."""
    return {error["field"]: error["message"] for error in assert_problem(response, 400)["errors"]}
