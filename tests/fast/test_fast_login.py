"""The login service's routes in-process (Flask's test client) on the real FerretDB: body
validation, registration, case-insensitive usernames, login throttling per username and
client address and the trusted-proxy rule, tokens, validation and logout."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pymongo
import pytest
from werkzeug.test import EnvironBuilder

from login_service.lookalikes import skeleton
from login_service.passwords import hash_password
from service_kit import database, migrate
from service_kit.timeutil import utcnow
from tests.lib.accounts import unique_name
from tests.lib.contract import BAD_AUTHORIZATION_HEADERS
from tests.lib.fast import FAST_SCRYPT_N, assert_problem, field_errors, fresh_database_uri, register_and_login

pytestmark = [pytest.mark.fast, pytest.mark.local]

WRONG = "not the password"
PROXY = "127.0.0.2"  # TRUSTED_PROXIES' default: HAProxy's source address towards login and profile


@pytest.fixture(scope="module")
def uri(database):
    return fresh_database_uri(database, "chatsys_fast_login")


@pytest.fixture(scope="module")
def app(module_apps, uri):
    return module_apps.login(uri)


@pytest.fixture
def client(app):
    return app.test_client()


def attempt(client, username: str, password: str, address: str = "127.0.0.1", forwarded_for: str | None = None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post(
        "/login",
        json={"username": username, "password": password},
        headers=headers,
        environ_overrides={"REMOTE_ADDR": address},
    )


# --- bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/users", "/login"])
def test_a_body_that_is_not_json_is_a_415_problem(client, path):
    assert_problem(client.post(path, data='{"username": "abc"}', content_type="text/plain"), 415)
    assert_problem(client.post(path, data="username=abc"), 415)


@pytest.mark.parametrize(
    "raw",
    [
        '{"username": "abc", "password": "long enough"',
        "[1, 2]",
        '"text"',
        "null",
        '{"username": "abc", "password": NaN}',
        b'{"username": "\xff\xfe"}',
    ],
)
def test_a_body_that_is_not_one_json_object_is_a_400_problem(client, raw):
    assert_problem(client.post("/users", data=raw, content_type="application/json"), 400)


def test_a_key_given_twice_is_a_400_naming_it(client):
    raw = '{"username": "first_one", "password": "long enough", "username": "admin"}'
    body = assert_problem(client.post("/users", data=raw, content_type="application/json"), 400)
    assert "'username'" in body["detail"] and "more than once" in body["detail"]


def _body_of_size(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    frame = b'{"username": "abc", "password": "long enough", "padding": ""}'
    return frame[:-2] + b"x" * (size - len(frame)) + b'"}'


def test_a_body_over_32_kib_is_a_413_problem_and_one_of_32_kib_is_read(client):
    limit = 32 * 1024
    at_limit = client.post("/users", data=_body_of_size(limit), content_type="application/json")
    assert field_errors(at_limit) == {"padding": "Extra inputs are not permitted"}
    assert_problem(client.post("/users", data=_body_of_size(limit + 1), content_type="application/json"), 413)


@pytest.mark.parametrize("size, status", [(32 * 1024, 400), (32 * 1024 + 1, 413), (200 * 1024, 413)])
def test_a_chunked_body_is_held_to_the_same_limit(client, size, status):
    # No Content-Length (as gunicorn passes a chunked body on): the server reads up to the
    # limit and then looks for one byte more.
    environ = EnvironBuilder(
        path="/users", method="POST", input_stream=io.BytesIO(_body_of_size(size)), content_type="application/json"
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    assert_problem(client.open(environ), status)


@pytest.mark.parametrize(
    "body, field, message",
    [
        (
            {"username": "ab", "password": "long enough"},
            "username",
            "must be 3 to 32 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
        ),
        ({"username": "x" * 33, "password": "long enough"}, "username", None),
        ({"username": "bad name", "password": "long enough"}, "username", None),
        ({"username": "ünïcode", "password": "long enough"}, "username", None),
        ({"username": "okname", "password": "short"}, "password", "String should have at least 8 characters"),
        ({"username": "okname", "password": "p" * 129}, "password", "String should have at most 128 characters"),
        ({"username": "okname", "password": "nul\u0000inside!"}, "password", "must not contain the NUL character"),
        (
            {"username": "okname", "password": "lone \ud800 surrogate"},
            "password",
            "Input should be a valid string, unable to parse raw data as a unicode string",
        ),
        ({"username": "okname"}, "password", "Field required"),
        ({"username": "okname", "password": "long enough", "admin": True}, "admin", "Extra inputs are not permitted"),
        ({"username": 12345, "password": "long enough"}, "username", "Input should be a valid string"),
        ({"username": None, "password": "long enough"}, "username", "Input should be a valid string"),
        ({"username": {"$gt": ""}, "password": "long enough"}, "username", "Input should be a valid string"),
    ],
)
def test_each_invalid_field_is_named_with_its_rule(client, body, field, message):
    errors = field_errors(client.post("/users", json=body))
    assert field in errors
    if message is not None:
        assert errors[field] == message


def test_an_operator_in_place_of_a_password_is_refused_before_any_lookup(client):
    assert field_errors(attempt(client, "someone", {"$ne": None})) == {"password": "Input should be a valid string"}


# --- registration ----------------------------------------------------------------------


def test_registration_answers_201_with_the_name_and_its_location(client):
    name = unique_name("New_")
    created = client.post("/users", json={"username": name, "password": "long enough"})
    assert created.status_code == 201
    assert created.get_json() == {"username": name}
    assert created.headers["Location"] == f"/users/{name}"
    assert created.headers["X-Instance"] == "login@4101"
    assert created.headers["Cache-Control"] == "no-store"


def test_usernames_are_unique_whatever_their_case_and_keep_the_case_registered(client, app):
    name = unique_name("Mixed_Case_")
    assert client.post("/users", json={"username": name, "password": "long enough"}).status_code == 201
    taken = assert_problem(client.post("/users", json={"username": name.lower(), "password": "other one!"}), 409)
    assert taken["type"].endswith("/username-taken")
    session = attempt(client, name.upper(), "long enough")
    assert session.status_code == 200 and session.get_json()["username"] == name
    validated = client.get("/validate", headers={"Authorization": f"Bearer {session.get_json()['token']}"})
    assert validated.get_json()["username"] == name
    with app.app_context():
        assert database.db().users.find_one({"_id": name.lower()})["username"] == name


def look_alikes(stem: str) -> list[str]:
    """Names that differ from `stem` (lower case, holding no `0 1 I l m`) and from each other
    in more than case, and all look the same: `o` as `0`, `l` as `I` or `1`, `m` as `rn`."""
    return [f"car{o}{ell}_{stem}_{em}" for o in "o0" for ell in "lI1" for em in ("m", "rn")]


def test_a_name_that_looks_like_a_taken_one_is_taken(client):
    first, *others = look_alikes(uuid.uuid4().hex[:8].translate(str.maketrans("01", "ab")))
    assert client.post("/users", json={"username": first, "password": "long enough"}).status_code == 201
    for name in [*others, first.upper()]:
        taken = assert_problem(client.post("/users", json={"username": name, "password": "long enough"}), 409)
        assert taken["type"].endswith("/username-taken") and taken["title"] == "Conflict"
        assert repr(name) in taken["detail"]
    assert "looks the same" in taken_detail(client, others[0]) and "is taken" in taken_detail(client, first.upper())
    assert attempt(client, others[0], "long enough").status_code == 401, "the look-alike has no account"
    different = first.replace("car", "bar")
    assert client.post("/users", json={"username": different, "password": "long enough"}).status_code == 201


def taken_detail(client, name: str) -> str:
    return assert_problem(client.post("/users", json={"username": name, "password": "long enough"}), 409)["detail"]


@pytest.fixture
def empty_uri(database):
    return fresh_database_uri(database, "chatsys_fast_login_earlier", migrated=False)


def test_users_of_the_earlier_layout_get_skeletons_and_look_alikes_among_them_keep_their_accounts(apps, empty_uri):
    uri = empty_uri
    stem = uuid.uuid4().hex[:8].translate(str.maketrans("01", "ab"))
    first, second, third = look_alikes(stem)[:3]
    with pymongo.MongoClient(uri) as client:
        users = client.get_default_database().users
        for offset, name in enumerate([second, first]):  # registered in this order, without a skeleton
            users.insert_one(
                {
                    "_id": name.lower(),
                    "username": name,
                    "password_hash": hash_password("long enough", FAST_SCRYPT_N),
                    "created_at": utcnow() + timedelta(seconds=offset),
                    "login_addresses": [],
                }
            )
    migrate.migrate(uri)
    app = apps.login(uri)
    client = app.test_client()
    with app.app_context():
        keys = {user["username"]: user["skeleton"] for user in database_users()}
    assert keys[second] == skeleton(first) and keys[first] == f"{skeleton(first)} {first.lower()}"
    for name in (first, second):
        assert attempt(client, name, "long enough").status_code == 200
    assert "looks the same" in taken_detail(client, third)
    assert (
        apps.login(uri).test_client().post("/users", json={"username": third, "password": "x" * 8}).status_code == 409
    )


def database_users() -> list[dict]:
    return list(database.db().users.find())


def test_registrations_per_address_are_bounded_and_counted_per_forwarded_address(apps, uri):
    app = apps.login(uri, registrations_per_address=2, registration_window_seconds=600)
    client = app.test_client()

    def register(address: str, forwarded_for: str | None = None):
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return client.post(
            "/users",
            json={"username": unique_name(), "password": "long enough"},
            headers=headers,
            environ_overrides={"REMOTE_ADDR": address},
        )

    assert [register("10.1.0.1").status_code for _ in range(2)] == [201, 201]
    refused = assert_problem(register("10.1.0.1"), 429)
    assert "registrations" in refused["detail"]
    assert register("10.1.0.1").headers["Retry-After"] == "600"
    assert register("10.1.0.2").status_code == 201
    # Behind the trusted proxy each client counts on its own; a forwarded address from
    # anyone else is ignored, so it cannot dodge the count.
    assert [register(PROXY, "10.1.0.3").status_code for _ in range(3)] == [201, 201, 429]
    assert register(PROXY, "10.1.0.4").status_code == 201
    assert register("10.1.0.1", forwarded_for="10.1.0.5").status_code == 429


# --- login and its throttling ----------------------------------------------------------


def test_login_answers_a_bearer_token_that_validates(client, app):
    account = register_and_login(app)
    validated = client.get("/validate", headers=account.auth)
    assert validated.status_code == 200
    body = validated.get_json()
    assert body["username"] == account.username and body["expires_at"].endswith("Z")


def test_wrong_password_and_unknown_user_get_the_same_401(client, app):
    account = register_and_login(app)
    wrong = assert_problem(attempt(client, account.username, WRONG, "10.2.0.1"), 401)
    unknown = assert_problem(attempt(client, unique_name(), WRONG, "10.2.0.1"), 401)
    assert wrong.pop("request_id") != unknown.pop("request_id")  # each request's own
    assert wrong == unknown


def test_five_failures_from_one_address_block_that_username_there_only(client, app):
    account = register_and_login(app)
    assert [attempt(client, account.username, WRONG, "10.3.0.1").status_code for _ in range(5)] == [401] * 5
    blocked = assert_problem(attempt(client, account.username, account.password, "10.3.0.1"), 429)
    assert "this username from this address" in blocked["detail"]
    assert 0 < int(attempt(client, account.username, account.password, "10.3.0.1").headers["Retry-After"]) <= 301
    assert attempt(client, account.username.upper(), account.password, "10.3.0.1").status_code == 429
    assert attempt(client, account.username, account.password, "10.3.0.2").status_code == 200
    other = register_and_login(app, address="10.3.0.1")
    assert attempt(client, other.username, other.password, "10.3.0.1").status_code == 200


def test_a_successful_login_clears_the_failures_of_its_address(client, app):
    account = register_and_login(app)
    assert [attempt(client, account.username, WRONG, "10.4.0.1").status_code for _ in range(4)] == [401] * 4
    assert attempt(client, account.username, account.password, "10.4.0.1").status_code == 200
    assert [attempt(client, account.username, WRONG, "10.4.0.1").status_code for _ in range(5)] == [401] * 5
    assert attempt(client, account.username, WRONG, "10.4.0.1").status_code == 429


def test_a_forwarded_address_from_an_untrusted_client_is_ignored(client, app):
    account = register_and_login(app)
    for number in range(5):
        assert (
            attempt(client, account.username, WRONG, "10.5.0.1", forwarded_for=f"192.0.2.{number}").status_code == 401
        )
    assert (
        attempt(client, account.username, account.password, "10.5.0.1", forwarded_for="192.0.2.99").status_code == 429
    )


def test_behind_the_trusted_proxy_each_forwarded_client_is_throttled_on_its_own(client, app):
    account = register_and_login(app)
    for _ in range(5):
        assert attempt(client, account.username, WRONG, PROXY, forwarded_for="198.51.100.1").status_code == 401
    assert attempt(client, account.username, account.password, PROXY, forwarded_for="198.51.100.1").status_code == 429
    # Neither the proxy's own address nor another client behind it is blocked.
    assert attempt(client, account.username, account.password, PROXY, forwarded_for="198.51.100.2").status_code == 200
    assert attempt(client, account.username, account.password, PROXY).status_code == 200


def test_trusted_proxies_name_networks(apps, uri):
    app = apps.login(uri, trusted_proxies=("10.60.0.0/16",))
    client = app.test_client()
    account = register_and_login(app)
    for _ in range(5):
        assert attempt(client, account.username, WRONG, "10.60.7.7", forwarded_for="203.0.113.1").status_code == 401
    assert (
        attempt(client, account.username, account.password, "10.60.8.8", forwarded_for="203.0.113.1").status_code == 429
    )
    assert (
        attempt(client, account.username, account.password, "10.60.7.7", forwarded_for="203.0.113.2").status_code == 200
    )
    # 127.0.0.2 is no longer trusted: its forwarded address is ignored.
    for _ in range(5):
        assert attempt(client, account.username, WRONG, PROXY, forwarded_for="203.0.113.3").status_code == 401
    assert attempt(client, account.username, account.password, PROXY, forwarded_for="203.0.113.4").status_code == 429


def test_failures_per_address_are_bounded_whatever_the_usernames(apps, uri):
    client = apps.login(uri, login_max_failures_per_address=3).test_client()
    assert [attempt(client, unique_name(), WRONG, "10.7.0.1").status_code for _ in range(3)] == [401] * 3
    blocked = assert_problem(attempt(client, unique_name(), WRONG, "10.7.0.1"), 429)
    assert blocked["detail"] == "Too many failed logins from this address; wait before trying again."
    assert attempt(client, unique_name(), WRONG, "10.7.0.2").status_code == 401


def test_failures_per_username_from_many_addresses_spare_the_users_own_addresses(apps, uri):
    app = apps.login(uri, login_max_failures_per_user=3)
    client = app.test_client()
    account = register_and_login(app, address="10.8.0.1")
    assert [attempt(client, account.username, WRONG, f"10.8.1.{n}").status_code for n in range(3)] == [401] * 3
    blocked = assert_problem(attempt(client, account.username, WRONG, "10.8.1.9"), 429)
    assert blocked["detail"] == "Too many failed logins for this username; wait before trying again."
    assert attempt(client, account.username, account.password, "10.8.0.1").status_code == 200
    assert attempt(client, account.username, account.password, "10.8.2.1").status_code == 429


def test_a_hash_of_another_cost_is_replaced_on_the_next_login(apps, uri):
    cheap, current = apps.login(uri, scrypt_n=2**10), apps.login(uri)
    account = register_and_login(cheap)
    with current.app_context():
        users = database.db().users
        assert users.find_one({"_id": account.username})["password_hash"].startswith("scrypt:1024:8:1$")
        assert attempt(current.test_client(), account.username, account.password).status_code == 200
        assert users.find_one({"_id": account.username})["password_hash"].startswith("scrypt:4096:8:1$")
    assert attempt(current.test_client(), account.username, account.password).status_code == 200
    assert attempt(current.test_client(), account.username, WRONG).status_code == 401


# --- tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(client, app, scheme):
    account = register_and_login(app)
    assert client.get("/validate", headers={"Authorization": f"{scheme} {account.token}"}).status_code == 200


@pytest.mark.parametrize("header", BAD_AUTHORIZATION_HEADERS)
def test_missing_malformed_and_unknown_tokens_are_401_with_a_challenge(client, header):
    headers = {} if header is None else {"Authorization": header}
    assert_problem(client.get("/validate", headers=headers), 401)
    assert_problem(client.post("/logout", headers=headers), 401)


def test_logout_kills_the_token_and_only_that_one(client, app):
    account = register_and_login(app)
    second = attempt(client, account.username, account.password).get_json()["token"]
    assert client.post("/logout", headers=account.auth).status_code == 204
    assert_problem(client.get("/validate", headers=account.auth), 401)
    assert_problem(client.post("/logout", headers=account.auth), 401)
    assert client.get("/validate", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_a_token_is_dead_at_its_expiry(apps, uri):
    app = apps.login(uri, token_ttl_seconds=0)
    account = register_and_login(app)
    assert_problem(app.test_client().get("/validate", headers=account.auth), 401)


def test_health_and_ready_name_the_instance(client):
    assert client.get("/health").get_json() == {"status": "ok", "service": "login", "instance": "login@4101"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_an_unknown_path_and_a_wrong_method_are_problems(client):
    assert_problem(client.get("/nothing-here"), 404)
    wrong = assert_problem(client.get("/users"), 405)
    assert wrong["title"] == "Method Not Allowed"
    assert "POST" in client.get("/login").headers["Allow"]


def test_on_a_database_not_migrated_ready_and_every_route_answer_503_until_the_command_runs(apps, database):
    uri = fresh_database_uri(database, "chatsys_fast_not_migrated", migrated=False)
    client = apps.login(uri).test_client()
    for response in (
        client.get("/ready"),
        client.post("/users", json={"username": unique_name(), "password": "x" * 8}),
    ):
        body = assert_problem(response, 503)
        assert body["type"].endswith("/database-not-migrated")
        assert "run `python -m service_kit.migrate`" in body["detail"]
    assert client.get("/health").status_code == 200
    migrate.migrate(uri)
    assert client.get("/ready").status_code == 200
    assert client.post("/users", json={"username": unique_name(), "password": "x" * 8}).status_code == 201
