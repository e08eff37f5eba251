"""The login service holds to the contract: accounts, login, validate, logout, throttling."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from tests.lib.accounts import register_and_login, unique_name
from tests.lib.contract import BAD_AUTHORIZATION_HEADERS, assert_instance, assert_problem, json_post


def test_registration_answers_201_with_the_username(stack):
    name = unique_name()
    response = json_post(f"{stack.login_url}/users", {"username": name, "password": "long enough"})
    assert response.status_code == 201
    assert response.json() == {"username": name}
    assert_instance(response, "login")


def test_taken_username_answers_409(stack, user):
    response = json_post(f"{stack.login_url}/users", {"username": user.username, "password": "another one"})
    assert_problem(response, 409)


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": "long enough"},
        {"username": "x" * 33, "password": "long enough"},
        {"username": "bad name", "password": "long enough"},
        {"username": "ünïcode", "password": "long enough"},
        {"username": "okname", "password": "short"},
        {"username": "okname", "password": "p" * 129},
        {"username": "okname"},
        {"password": "long enough"},
        {"username": "okname", "password": "long enough", "admin": True},
        {"username": 12345, "password": "long enough"},
        {"username": None, "password": "long enough"},
        {"username": ["a", "b", "c"], "password": "long enough"},
        {"username": "okname", "password": {"$ne": None}},
        {"username": {"$gt": ""}, "password": "long enough"},
        {"username": "okname", "password": "nul\u0000inside!"},
    ],
)
def test_invalid_registration_is_a_400_problem(stack, body):
    assert_problem(json_post(f"{stack.login_url}/users", body), 400)


def test_operator_injection_on_login_is_refused_with_400(stack, user):
    response = json_post(f"{stack.login_url}/login", {"username": user.username, "password": {"$ne": None}})
    assert_problem(response, 400)


def test_login_returns_a_bearer_token_with_its_expiry(stack):
    name = unique_name()
    json_post(f"{stack.login_url}/users", {"username": name, "password": "long enough"})
    response = json_post(f"{stack.login_url}/login", {"username": name, "password": "long enough"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"token", "token_type", "username", "expires_at", "expires_in"}
    assert body["token_type"] == "Bearer" and body["username"] == name
    assert len(body["token"]) >= 22  # 128 bits in URL-safe base64
    assert body["expires_at"].endswith("Z")
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    remaining = (expires - datetime.now(UTC)).total_seconds()
    assert isinstance(body["expires_in"], int) and abs(remaining - body["expires_in"]) < 60


def test_each_login_gets_a_fresh_token(stack, user):
    again = json_post(f"{stack.login_url}/login", {"username": user.username, "password": user.password})
    assert again.json()["token"] != user.token


def test_wrong_password_and_unknown_user_get_the_same_401(stack, user):
    wrong = json_post(f"{stack.login_url}/login", {"username": user.username, "password": "not the password"})
    unknown = json_post(f"{stack.login_url}/login", {"username": unique_name(), "password": "not the password"})
    first, second = assert_problem(wrong, 401), assert_problem(unknown, 401)
    # Apart from each request's own id (a member this deployment adds to problem bodies).
    first.pop("request_id", None), second.pop("request_id", None)
    assert first == second


def test_repeated_failures_for_one_username_get_429_with_retry_after(stack, user):
    for _ in range(5):
        assert_problem(
            json_post(f"{stack.login_url}/login", {"username": user.username, "password": "wrong password"}), 401
        )
    blocked = json_post(f"{stack.login_url}/login", {"username": user.username, "password": user.password})
    assert_problem(blocked, 429)
    assert int(blocked.headers["Retry-After"]) > 0
    # Other users are not affected.
    other = register_and_login(stack.login_url)
    assert (
        json_post(f"{stack.login_url}/login", {"username": other.username, "password": other.password}).status_code
        == 200
    )


def test_validate_names_the_user_and_the_expiry(stack, user):
    response = requests.get(f"{stack.login_url}/validate", headers=user.auth, timeout=10)
    assert response.status_code == 200
    assert response.json()["username"] == user.username
    assert response.json()["expires_at"].endswith("Z")


@pytest.mark.parametrize("header", BAD_AUTHORIZATION_HEADERS)
def test_validate_refuses_missing_malformed_and_unknown_tokens(stack, header):
    headers = {} if header is None else {"Authorization": header}
    assert_problem(requests.get(f"{stack.login_url}/validate", headers=headers, timeout=10), 401)


def test_logout_kills_the_token(stack, user):
    response = requests.post(f"{stack.login_url}/logout", headers=user.auth, timeout=10)
    assert response.status_code == 204
    assert_problem(requests.get(f"{stack.login_url}/validate", headers=user.auth, timeout=10), 401)
    assert_problem(requests.post(f"{stack.login_url}/logout", headers=user.auth, timeout=10), 401)


def test_logout_without_token_is_401(stack):
    assert_problem(requests.post(f"{stack.login_url}/logout", timeout=10), 401)
