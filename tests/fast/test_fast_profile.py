"""The profile service's routes in-process (Flask's test client) on the real FerretDB.

Tokens are checked by the real login code: the profile app's token check
(`app.extensions["token_check"]`) is tests.lib.fast.InProcessTokenCheck, the login service's
own `LocalTokenCheck` run under a login app on the same database, where a deployment asks
the login service over HTTP. Nothing is mocked; only the HTTP hop between the services is
left out (the process-level tests cover it).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service_kit import database
from tests.lib.fast import assert_problem, field_errors, fresh_database_uri, register_and_login

pytestmark = [pytest.mark.fast, pytest.mark.local]


@pytest.fixture(scope="module")
def uri(database):
    return fresh_database_uri(database, "chatsys_fast_profile")


@pytest.fixture(scope="module")
def login(module_apps, uri):
    return module_apps.login(uri)


@pytest.fixture(scope="module")
def app(module_apps, uri, login):
    return module_apps.profile(uri, login)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def owner(login):
    return register_and_login(login)


@pytest.fixture
def other(login):
    return register_and_login(login)


def put(client, account, body, name: str | None = None):
    return client.put(f"/profiles/{name or account.username}", json=body, headers=account.auth)


def test_a_profile_never_written_is_a_404_problem(client, owner):
    body = assert_problem(client.get(f"/profiles/{owner.username}", headers=owner.auth), 404)
    assert body["type"].endswith("/profile-not-found")
    assert_problem(client.get("/profiles/no such name", headers=owner.auth), 404)
    assert_problem(client.get("/profiles/" + "x" * 33, headers=owner.auth), 404)


def test_the_first_put_creates_the_profile_with_defaults(client, owner):
    written = put(client, owner, {"bio": "hello"})
    assert written.status_code == 200
    assert written.headers["X-Instance"] == "profile@4201"
    body = written.get_json()
    assert list(body) == ["username", "display_name", "bio", "avatar_url", "updated_at"]
    assert body["username"] == body["display_name"] == owner.username
    assert (body["bio"], body["avatar_url"]) == ("hello", "")
    assert body["updated_at"].endswith("Z")
    assert client.get(f"/profiles/{owner.username}", headers=owner.auth).get_json() == body


def test_later_puts_change_only_the_fields_they_give(client, owner):
    put(client, owner, {"display_name": "Ada", "bio": "first"})
    body = put(client, owner, {"avatar_url": "https://example.org/a.png"}).get_json()
    assert (body["display_name"], body["bio"], body["avatar_url"]) == ("Ada", "first", "https://example.org/a.png")
    cleared = put(client, owner, {"avatar_url": "", "bio": ""}).get_json()
    assert (cleared["display_name"], cleared["bio"], cleared["avatar_url"]) == ("Ada", "", "")


def test_anybody_with_a_token_reads_a_profile_and_only_its_owner_writes_it(client, owner, other):
    put(client, owner, {"display_name": "Readable"})
    assert client.get(f"/profiles/{owner.username}", headers=other.auth).get_json()["display_name"] == "Readable"
    refused = assert_problem(put(client, other, {"bio": "hijacked"}, name=owner.username), 403)
    assert refused["detail"] == "You may only edit your own profile."
    assert client.get(f"/profiles/{owner.username}", headers=other.auth).get_json()["bio"] == ""


def test_reads_and_writes_need_a_live_token(client, login, owner):
    path = f"/profiles/{owner.username}"
    assert_problem(client.get(path), 401)
    assert_problem(client.put(path, json={"bio": "x"}, headers={"Authorization": "Bearer not-a-token"}), 401)
    assert_problem(client.get(path, headers={"Authorization": f"Basic {owner.token}"}), 401)
    assert put(client, owner, {"bio": "x"}).status_code == 200
    assert client.get(path, headers={"Authorization": f"bEARER {owner.token}"}).status_code == 200
    assert login.test_client().post("/logout", headers=owner.auth).status_code == 204
    assert_problem(client.get(path, headers=owner.auth), 401)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"display_name": ""}, "display_name"),
        ({"display_name": "d" * 65}, "display_name"),
        ({"bio": "b" * 501}, "bio"),
        ({"avatar_url": "ftp://example.org/a.png"}, "avatar_url"),
        ({"avatar_url": "javascript:alert(1)"}, "avatar_url"),
        ({"avatar_url": "https:///no-host"}, "avatar_url"),
        ({"avatar_url": "https://example.org/a b.png"}, "avatar_url"),
        ({"avatar_url": "https://example.org/" + "a" * 481}, "avatar_url"),
        ({"bio": 5}, "bio"),
        ({"bio": {"$set": "x"}}, "bio"),
        ({"nickname": "x"}, "nickname"),
        ({"display_name": "x\u0000y"}, "display_name"),
    ],
)
def test_each_invalid_field_is_a_400_naming_it(client, owner, body, field):
    assert field in field_errors(put(client, owner, body))


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "give at least one of display_name, bio, avatar_url"),
        ({"display_name": None, "bio": None}, "null is not a value for display_name, bio"),
    ],
)
def test_an_empty_body_and_nulls_are_400s_saying_so(client, owner, body, message):
    assert list(field_errors(put(client, owner, body)).values()) == [message]


def test_the_longest_values_are_kept_and_lengths_count_code_points(client, owner):
    longest = {"display_name": "🙂" * 64, "bio": "é" * 500, "avatar_url": "https://example.org/" + "a" * 480}
    assert put(client, owner, longest).status_code == 200
    stored = client.get(f"/profiles/{owner.username}", headers=owner.auth).get_json()
    assert {name: stored[name] for name in longest} == longest


def test_the_body_rules_hold_for_profiles_too(client, owner):
    path, headers = f"/profiles/{owner.username}", owner.auth
    assert_problem(client.put(path, data='{"bio": "x"}', content_type="text/plain", headers=headers), 415)
    assert_problem(
        client.put(path, data='{"bio": "x", "bio": "y"}', content_type="application/json", headers=headers), 400
    )
    too_large = '{"bio": "' + "b" * (32 * 1024) + '"}'
    assert_problem(client.put(path, data=too_large, content_type="application/json", headers=headers), 413)
    assert_problem(client.post(path, json={"bio": "x"}, headers=headers), 405)


def test_first_puts_at_once_all_succeed_and_one_of_them_is_stored(app, owner):
    def first_put(number: int):
        return put(app.test_client(), owner, {"bio": f"bio {number}"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(first_put, range(6)))
    assert [answer.status_code for answer in answers] == [200] * 6
    with app.app_context():
        stored = list(database.db().profiles.find({"_id": owner.username}))
    assert len(stored) == 1 and stored[0]["bio"] in {f"bio {number}" for number in range(6)}
