"""Routes of the login service, as in the service contract."""
from __future__ import annotations

import secrets
from datetime import timedelta

from flask import Blueprint, Flask, current_app, g, jsonify, request
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from login_service import passwords
from login_service.passwords import dummy_hash, hash_password
from service_kit import database
from service_kit.auth import bearer_token, require_user
from service_kit.housekeeping import Every
from service_kit.problems import Problem, unauthorized
from service_kit.timeutil import iso, utcnow
from service_kit.token_cache import token_digest
from service_kit.validation import StrictBody, parse_body, text_field

blueprint = Blueprint("login", __name__)

Username = text_field(pattern=r"[A-Za-z0-9_.\-]{3,32}", rule="3 to 32 characters of A-Z, a-z, 0-9, '_', '.' and '-'")
Password = text_field(min_length=8, max_length=128)


class Credentials(StrictBody):
    username: Username
    password: Password


class LocalTokenCheck:
    """Token check inside the login service: straight to its own database."""

    def username_for(self, token: str) -> str:
        record = find_live_token(token)
        if record is None:
            raise unauthorized("The token is unknown, expired or revoked.")
        return record["username"]


def find_live_token(token: str) -> dict | None:
    record = database.db().tokens.find_one({"_id": token_digest(token)})
    if record is None or record["expires_at"] <= utcnow():
        return None
    return record


def _sweep_expired() -> None:
    """Drop expired tokens and old login failures. Expiry itself never waits for this:
    every check compares expires_at, since FerretDB has no TTL indexes."""
    settings = current_app.config["SETTINGS"]
    db = database.db()
    db.tokens.delete_many({"expires_at": {"$lte": utcnow()}})
    horizon = utcnow() - timedelta(seconds=settings.login_failure_window_seconds)
    db.login_failures.delete_many({"at": {"$lte": horizon}})
    registration_horizon = utcnow() - timedelta(seconds=settings.registration_window_seconds)
    db.registrations.delete_many({"at": {"$lte": registration_horizon}})


sweep_expired = Every(60, _sweep_expired)


def setup(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["token_check"] = LocalTokenCheck()
    app.extensions["dummy_password_hash"] = dummy_hash(settings.scrypt_n)
    with app.app_context():
        try:
            db = database.db()
            db.tokens.create_index([("expires_at", ASCENDING)])
            db.login_failures.create_index([("username", ASCENDING), ("at", ASCENDING)])
            db.registrations.create_index([("address", ASCENDING), ("at", ASCENDING)])
        except Exception:  # the database may come up after us; indexes are an optimisation
            app.logger.warning("could not create indexes yet; continuing")


def _refuse_if_registering_too_often(settings) -> None:
    """A 409 tells that a name is taken, so registrations per client address are bounded
    (generously: a load test registers one user per virtual user)."""
    if settings.registrations_per_address <= 0:
        return
    window = timedelta(seconds=settings.registration_window_seconds)
    since = utcnow() - window
    registrations = database.db().registrations
    recent = registrations.count_documents({"address": request.remote_addr, "at": {"$gt": since}})
    if recent >= settings.registrations_per_address:
        raise Problem(429, "Too Many Requests", "Too many registrations from this address; try again later.",
                      headers={"Retry-After": str(settings.registration_window_seconds)})
    registrations.insert_one({"address": request.remote_addr, "at": utcnow()})


@blueprint.post("/users")
def register():
    credentials = parse_body(Credentials)
    settings = current_app.config["SETTINGS"]
    sweep_expired()
    _refuse_if_registering_too_often(settings)
    record = {
        "_id": credentials.username,
        "password_hash": hash_password(credentials.password, settings.scrypt_n),
        "created_at": utcnow(),
    }
    try:
        database.db().users.insert_one(record)
    except DuplicateKeyError:
        raise Problem(409, "Conflict", f"The username {credentials.username!r} is taken.",
                      kind="username-taken") from None
    response = jsonify(username=credentials.username)
    response.status_code = 201
    response.headers["Location"] = f"/users/{credentials.username}"
    return response


def _record_attempt_or_refuse(username: str, settings) -> None:
    """Every login attempt is recorded before its password is checked, then the recent
    attempts are counted (its own included): however many arrive at once, at most
    LOGIN_MAX_FAILURES of them reach the password check. A successful login clears them.
    Each attempt is its own document because inserts are atomic on every backend, where
    a counter's read-modify-write is not (FerretDB applies $inc outside a transaction)."""
    failures = database.db().login_failures
    window = timedelta(seconds=settings.login_failure_window_seconds)
    now = utcnow()
    failures.insert_one({"username": username, "at": now})
    recent = list(failures.find({"username": username, "at": {"$gt": now - window}}, {"at": 1}).sort("at", ASCENDING))
    if len(recent) > settings.login_max_failures:
        oldest_counted = recent[len(recent) - settings.login_max_failures - 1]["at"]
        retry_after = max(1, int((oldest_counted + window - now).total_seconds()) + 1)
        raise Problem(429, "Too Many Requests",
                      "Too many failed logins for this username; wait before trying again.",
                      headers={"Retry-After": str(retry_after)})


@blueprint.post("/login")
def login():
    credentials = parse_body(Credentials)
    settings = current_app.config["SETTINGS"]
    db = database.db()
    sweep_expired()
    _record_attempt_or_refuse(credentials.username, settings)

    user = db.users.find_one({"_id": credentials.username})
    stored = user["password_hash"] if user else current_app.extensions["dummy_password_hash"]
    matches, rehashed = passwords.verify(stored, credentials.password, settings.scrypt_n)
    if not matches or user is None:
        raise unauthorized("Unknown username or wrong password.")
    if rehashed:  # an earlier format or cost: upgraded now that the password is known
        db.users.update_one({"_id": user["_id"]}, {"$set": {"password_hash": rehashed}})

    db.login_failures.delete_many({"username": credentials.username})
    token = secrets.token_urlsafe(32)
    issued = utcnow()
    expires_at = issued + timedelta(seconds=settings.token_ttl_seconds)
    db.tokens.insert_one({"_id": token_digest(token), "username": credentials.username,
                          "issued_at": issued, "expires_at": expires_at})
    return jsonify(token=token, token_type="Bearer", username=credentials.username,
                   expires_at=iso(expires_at), expires_in=settings.token_ttl_seconds)


@blueprint.get("/validate")
def validate():
    record = find_live_token(bearer_token())
    if record is None:
        raise unauthorized("The token is unknown, expired or revoked.")
    return jsonify(username=record["username"], expires_at=iso(record["expires_at"]))


@blueprint.post("/logout")
@require_user
def logout():
    database.db().tokens.delete_one({"_id": token_digest(g.token)})
    return "", 204
