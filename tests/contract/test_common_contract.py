"""Rules every service follows: JSON only, problem+json errors, size limit, health, X-Instance."""

from __future__ import annotations

import pytest
import requests

from tests.lib.contract import assert_instance, assert_problem


@pytest.fixture(params=["login", "profile", "chat"])
def service(request, stack):
    url = {"login": stack.login_url, "profile": stack.profile_url, "chat": stack.chat_url}[request.param]
    assert url, "a service without a URL is deselected in conformance mode (tests/conftest.py)"
    return request.param, url


def test_health_answers_without_looking_at_dependencies(service):
    name, url = service
    response = requests.get(f"{url}/health", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["service"] == name
    assert body["instance"] == assert_instance(response, name)


def test_ready_answers_200_while_the_database_answers(service):
    name, url = service
    response = requests.get(f"{url}/ready", timeout=5)
    assert response.status_code == 200
    assert_instance(response, name)


def test_unknown_path_is_a_404_problem(service):
    name, url = service
    response = requests.get(f"{url}/no/such/thing", timeout=5)
    assert_problem(response, 404)
    assert_instance(response, name)


def test_wrong_method_is_a_405_problem(service):
    _, url = service
    assert_problem(requests.delete(f"{url}/health", timeout=5), 405)


def _post_target(service, user) -> tuple[str, dict]:
    name, url = service
    if name == "login":
        return f"{url}/users", {}
    if name == "profile":
        return f"{url}/profiles/{user.username}", user.auth
    return f"{url}/rooms", user.auth


def test_non_json_body_is_415(service, user):
    target, headers = _post_target(service, user)
    method = requests.put if service[0] == "profile" else requests.post
    response = method(
        target, data="username=a", headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}, timeout=5
    )
    assert_problem(response, 415)


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"text"', b"42", b"null", b"\xff\xfe", b'{"a": NaN}'])
def test_malformed_json_or_non_object_is_400(service, user, raw):
    target, headers = _post_target(service, user)
    method = requests.put if service[0] == "profile" else requests.post
    response = method(target, data=raw, headers={**headers, "Content-Type": "application/json"}, timeout=5)
    assert_problem(response, 400)


def test_body_over_32_kib_is_413(service, user):
    target, headers = _post_target(service, user)
    method = requests.put if service[0] == "profile" else requests.post
    body = b'{"text": "' + b"a" * (33 * 1024) + b'"}'
    response = method(target, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=5)
    assert_problem(response, 413)


def test_duplicate_keys_are_400_and_the_last_one_never_wins(service, user):
    """{"username": "nobody", "username": "<a real user>", ...} once logged in the real user."""
    target, headers = _post_target(service, user)
    method = requests.put if service[0] == "profile" else requests.post
    field = {"login": "username", "profile": "display_name", "chat": "name"}[service[0]]
    raw = f'{{"{field}": "nobody", "{field}": "second"}}'
    if service[0] == "login":
        target = f"{service[1]}/login"
        raw = f'{{"username": "nobody", "username": "{user.username}", "password": "{user.password}"}}'
    response = method(target, data=raw, headers={**headers, "Content-Type": "application/json"}, timeout=5)
    problem = assert_problem(response, 400)
    assert repr(field) in problem["detail"]


@pytest.mark.parametrize("raw", ['{"text": "\\ud800"}', '{"text": "a\\udc00b"}'])
def test_lone_surrogate_escapes_are_400_not_500(service, user, raw):
    target, headers = _post_target(service, user)
    method = requests.put if service[0] == "profile" else requests.post
    field = {"login": "password", "profile": "bio", "chat": "name"}[service[0]]
    body = raw.replace('"text"', f'"{field}"')
    if service[0] == "login":
        body = body[:-1] + ', "username": "surrogate_probe"}'
    response = method(target, data=body.encode(), headers={**headers, "Content-Type": "application/json"}, timeout=5)
    assert_problem(response, 400)


def test_deeply_nested_json_is_400_not_500(service, user):
    target, headers = _post_target(service, user)
    method = requests.put if service[0] == "profile" else requests.post
    body = "[" * 5000 + "]" * 5000
    response = method(target, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=5)
    assert_problem(response, 400)


@pytest.mark.parametrize("kind", ["long request line", "huge header"])
def test_oversized_request_line_and_headers_get_a_problem_not_html(service, kind):
    _, url = service
    if kind == "long request line":
        response = requests.get(f"{url}/health?pad={'x' * 9000}", timeout=5)
    else:
        response = requests.get(f"{url}/health", headers={"X-Pad": "x" * 10000}, timeout=5)
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)
    assert response.headers.get("X-Instance")
