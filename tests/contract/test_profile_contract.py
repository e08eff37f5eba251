"""The profile service holds to the contract: owner-only writes, defaults, strict fields."""

from __future__ import annotations

import pytest
import requests

from tests.lib.contract import assert_instance, assert_problem


def put(stack, user, name, body, **kwargs):
    return requests.put(f"{stack.profile_url}/profiles/{name}", json=body, headers=user.auth, timeout=10, **kwargs)


def test_a_profile_never_written_is_404(stack, user):
    response = requests.get(f"{stack.profile_url}/profiles/{user.username}", headers=user.auth, timeout=10)
    assert_problem(response, 404)
    assert_instance(response, "profile")


def test_first_put_creates_the_profile_with_defaults(stack, user):
    response = put(stack, user, user.username, {"bio": "hello"})
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == user.username
    assert body["display_name"] == user.username
    assert body["bio"] == "hello"
    assert body["avatar_url"] == ""
    assert body["updated_at"].endswith("Z")


def test_later_puts_change_only_the_given_fields(stack, user):
    put(stack, user, user.username, {"display_name": "Ada", "bio": "first"})
    response = put(stack, user, user.username, {"avatar_url": "https://example.org/a.png"})
    body = response.json()
    assert (body["display_name"], body["bio"], body["avatar_url"]) == ("Ada", "first", "https://example.org/a.png")


def test_anybody_with_a_token_reads_any_profile(stack, user, other_user):
    put(stack, user, user.username, {"display_name": "Readable"})
    response = requests.get(f"{stack.profile_url}/profiles/{user.username}", headers=other_user.auth, timeout=10)
    assert response.status_code == 200 and response.json()["display_name"] == "Readable"


def test_nobody_edits_another_users_profile(stack, user, other_user):
    assert_problem(put(stack, other_user, user.username, {"bio": "hijacked"}), 403)


def test_reads_and_writes_need_a_valid_token(stack, user):
    assert_problem(requests.get(f"{stack.profile_url}/profiles/{user.username}", timeout=10), 401)
    bad = {"Authorization": "Bearer definitely-not-valid"}
    assert_problem(
        requests.put(f"{stack.profile_url}/profiles/{user.username}", json={"bio": "x"}, headers=bad, timeout=10), 401
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"display_name": ""},
        {"display_name": "d" * 65},
        {"bio": "b" * 501},
        {"avatar_url": "ftp://example.org/a.png"},
        {"avatar_url": "javascript:alert(1)"},
        {"avatar_url": "https://example.org/" + "a" * 490},
        {"display_name": None},
        {"bio": 5},
        {"bio": {"$set": "x"}},
        {"nickname": "x"},
        {"display_name": "x\u0000y"},
    ],
)
def test_invalid_profile_bodies_are_400(stack, user, body):
    assert_problem(put(stack, user, user.username, body), 400)


def test_text_round_trips_exactly_and_lengths_count_code_points(stack, user):
    text = "🙂" * 64  # 64 code points, 128 UTF-16 units, 256 UTF-8 bytes
    bio = "שלום עולם e\u0301 👩‍👩‍👧"
    response = put(stack, user, user.username, {"display_name": text, "bio": bio})
    assert response.status_code == 200, response.text
    stored = requests.get(f"{stack.profile_url}/profiles/{user.username}", headers=user.auth, timeout=10).json()
    assert stored["display_name"] == text and stored["bio"] == bio
