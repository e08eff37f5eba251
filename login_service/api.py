"""Routes of the login service, as in the service contract. The users and tokens live in
login_service.store, the bounds on logins and registrations in login_service.throttle."""

from __future__ import annotations

from typing import Annotated

from flask import Blueprint, Flask, current_app, g, jsonify, request

from login_service import passwords, store, throttle
from login_service.passwords import dummy_hash, hash_password
from service_kit import names
from service_kit.auth import bearer_token, require_user
from service_kit.problems import Problem, unauthorized
from service_kit.timeutil import iso
from service_kit.validation import StrictBody, parse_body, text_checks

blueprint = Blueprint("login", __name__)

Username = Annotated[str, *text_checks(pattern=names.USERNAME, rule=names.USERNAME_RULE)]
Password = Annotated[str, *text_checks(min_length=8, max_length=128)]


class Credentials(StrictBody):
    username: Username
    password: Password


class LocalTokenCheck:
    """Token check inside the login service: straight to its own database."""

    def username_for(self, token: str) -> str:
        record = store.find_live_token(token)
        if record is None:
            raise unauthorized("The token is unknown, expired or revoked.")
        return record["username"]


def setup(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["token_check"] = LocalTokenCheck()
    app.extensions["dummy_password_hash"] = dummy_hash(settings.scrypt_n)


@blueprint.post("/users")
def register():
    credentials = parse_body(Credentials)
    settings = current_app.config["SETTINGS"]
    store.sweep_expired()
    throttle.refuse_if_registering_too_often(settings)
    try:
        store.add_user(
            credentials.username, hash_password(credentials.password, settings.scrypt_n), request.remote_addr
        )
    except store.UsernameTaken as taken:
        if taken.looks_alike:
            detail = f"The username {credentials.username!r} looks the same as one that is taken."
        else:
            detail = f"The username {credentials.username!r} is taken."
        raise Problem(409, "Conflict", detail, kind="username-taken") from None
    response = jsonify(username=credentials.username)
    response.status_code = 201
    response.headers["Location"] = f"/users/{credentials.username}"
    return response


@blueprint.post("/login")
def login():
    credentials = parse_body(Credentials)
    settings = current_app.config["SETTINGS"]
    store.sweep_expired()
    key = store.user_key(credentials.username)
    user = store.find_user(key)
    throttle.record_attempt_or_refuse(key, user, settings)

    stored = user["password_hash"] if user else current_app.extensions["dummy_password_hash"]
    matches, rehashed = passwords.verify(stored, credentials.password, settings.scrypt_n)
    if not matches or user is None:
        raise unauthorized("Unknown username or wrong password.")
    if rehashed:  # an earlier format or cost: upgraded now that the password is known
        store.replace_password_hash(user, rehashed)

    throttle.forget_attempts(key, request.remote_addr)
    store.remember_login_address(user, request.remote_addr)
    username = store.username_of(user)
    token, expires_at = store.issue_token(username, settings.token_ttl_seconds)
    return jsonify(
        token=token,
        token_type="Bearer",
        username=username,
        expires_at=iso(expires_at),
        expires_in=settings.token_ttl_seconds,
    )


@blueprint.get("/validate")
def validate():
    record = store.find_live_token(bearer_token())
    if record is None:
        raise unauthorized("The token is unknown, expired or revoked.")
    return jsonify(username=record["username"], expires_at=iso(record["expires_at"]))


@blueprint.post("/logout")
@require_user
def logout():
    store.revoke_token(g.token)
    return "", 204
