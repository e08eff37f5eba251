"""Routes of the login service, as in the service contract."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from flask import Blueprint, Flask, current_app, g, jsonify, request
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from login_service import lookalikes, passwords
from login_service.passwords import dummy_hash, hash_password
from service_kit import database, names
from service_kit.auth import bearer_token, require_user
from service_kit.housekeeping import Every
from service_kit.problems import Problem, unauthorized
from service_kit.timeutil import iso, utcnow
from service_kit.token_cache import token_digest
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
    fold_usernames()  # a no-op once done; here for a database that was away at start
    index_skeletons()  # likewise


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
            db.login_failures.create_index([("address", ASCENDING), ("at", ASCENDING)])
            db.registrations.create_index([("address", ASCENDING), ("at", ASCENDING)])
            fold_usernames()
            index_skeletons()
        except Exception:  # the database may come up after us; indexes are an optimisation
            app.logger.warning("could not prepare the database yet; continuing")


def user_key(username: str) -> str:
    """Usernames are unique without regard to case: a user's `_id` is the name in lower case
    (the pattern allows ASCII only), and `username` keeps the case it was registered with."""
    return username.lower()


_FOLDED_MARK = "usernames-case-folded"


def fold_usernames() -> None:
    """Give users of the earlier layout (`_id` the name as registered) a lower-case `_id`.
    Runs once per database (a mark in `schema_marks`), safely in any number of processes: a
    user is copied before the original goes, and a copy that exists is kept. Two earlier
    names that differ only in case keep the first one copied; the other cannot log in."""
    db = database.db()
    if db.schema_marks.find_one({"_id": _FOLDED_MARK}) is not None:
        return
    for user in db.users.find({"username": {"$exists": False}}):
        name = user.pop("_id")
        if name != user_key(name):
            try:
                db.users.insert_one({"_id": user_key(name), "username": name, **user})
            except DuplicateKeyError:
                current_app.logger.warning("user %r differs from another only in case; it cannot log in", name)
            db.users.delete_one({"_id": name, "username": {"$exists": False}})
        else:
            db.users.update_one({"_id": name}, {"$set": {"username": name}})
    try:
        db.schema_marks.insert_one({"_id": _FOLDED_MARK, "at": utcnow()})
    except DuplicateKeyError:
        pass


_SKELETONS_MARK = "usernames-skeletons"


def index_skeletons() -> None:
    """Give users of the earlier layout their `skeleton` (login_service.lookalikes), then
    the unique index on it that makes look-alike names one name at registration. Runs once
    per database (a mark in `schema_marks`), safely in any number of processes: each gives
    the same keys, in order of registration. Earlier users whose names look alike all keep
    their accounts: the first holds the skeleton, each other one a key no name's skeleton
    can equal (the skeleton, a space, its `_id`), so it blocks no name the first does not."""
    db = database.db()
    if db.schema_marks.find_one({"_id": _SKELETONS_MARK}) is not None:
        return
    held = {user["skeleton"] for user in db.users.find({"skeleton": {"$exists": True}}, {"skeleton": 1})}
    earlier = db.users.find({"skeleton": {"$exists": False}}, {"username": 1})
    for user in earlier.sort([("created_at", ASCENDING), ("_id", ASCENDING)]):
        key = lookalikes.skeleton(user.get("username", user["_id"]))
        if key in held:
            current_app.logger.warning("user %r looks like an earlier user; both keep their accounts", user["_id"])
            key = f"{key} {user['_id']}"
        held.add(key)
        db.users.update_one({"_id": user["_id"], "skeleton": {"$exists": False}}, {"$set": {"skeleton": key}})
    db.users.create_index([("skeleton", ASCENDING)], unique=True)
    try:
        db.schema_marks.insert_one({"_id": _SKELETONS_MARK, "at": utcnow()})
    except DuplicateKeyError:
        pass


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
        raise Problem(
            429,
            "Too Many Requests",
            "Too many registrations from this address; try again later.",
            headers={"Retry-After": str(settings.registration_window_seconds)},
            limit="REGISTRATIONS_PER_ADDRESS",
        )
    registrations.insert_one({"address": request.remote_addr, "at": utcnow()})


@blueprint.post("/users")
def register():
    credentials = parse_body(Credentials)
    settings = current_app.config["SETTINGS"]
    sweep_expired()
    _refuse_if_registering_too_often(settings)
    record = {
        "_id": user_key(credentials.username),
        "username": credentials.username,
        # Unique (index_skeletons): of two registrations of look-alike names, however close
        # in time, one gets the 409 below.
        "skeleton": lookalikes.skeleton(credentials.username),
        "password_hash": hash_password(credentials.password, settings.scrypt_n),
        "created_at": utcnow(),
        # The address a user registered from is one they log in from: guesses from
        # elsewhere never lock them out of it, even before their first login.
        "login_addresses": [request.remote_addr],
    }
    users = database.db().users
    try:
        users.insert_one(record)
    except DuplicateKeyError:
        if users.find_one({"_id": record["_id"]}, {"_id": 1}) is not None:
            detail = f"The username {credentials.username!r} is taken."
        else:
            detail = f"The username {credentials.username!r} looks the same as one that is taken."
        raise Problem(409, "Conflict", detail, kind="username-taken") from None
    response = jsonify(username=credentials.username)
    response.status_code = 201
    response.headers["Location"] = f"/users/{credentials.username}"
    return response


def _seconds_until_within(failures, query: dict, limit: int, window: timedelta, now) -> int | None:
    """None while at most `limit` attempts match `query` in the window; else the seconds
    until enough of them are older than the window."""
    query = {**query, "at": {"$gt": now - window}}
    count = failures.count_documents(query)
    if limit <= 0 or count <= limit:
        return None
    oldest_counted = next(failures.find(query, {"at": 1}).sort("at", ASCENDING).skip(count - limit - 1).limit(1))
    return max(1, int((oldest_counted["at"] + window - now).total_seconds()) + 1)


def _record_attempt_or_refuse(username: str, user: dict | None, settings) -> None:
    """Every login attempt is recorded before its password is checked, then the recent
    attempts are counted (its own included), so however many arrive at once, no more than
    the limits reach the password check. A successful login clears the attempts of its
    username from its address. Each attempt is its own document because inserts are
    atomic on every backend, where a counter's read-modify-write is not (FerretDB applies
    $inc outside a transaction). Three limits, none of which an attacker elsewhere can
    turn against a user:
    - per username and client address (LOGIN_MAX_FAILURES, 5): guessing from one place;
    - per client address (LOGIN_MAX_FAILURES_PER_ADDRESS, 100): any usernames, such as
      unknown ones, which cost a full scrypt each too;
    - per username (LOGIN_MAX_FAILURES_PER_USER, 50): guessing from many addresses. It
      spares the addresses the user last logged in from, so the user keeps logging in."""
    failures = database.db().login_failures
    window = timedelta(seconds=settings.login_failure_window_seconds)
    now = utcnow()
    address = request.remote_addr
    attempt = failures.insert_one({"username": username, "address": address, "at": now})
    limits = [
        (
            {"username": username, "address": address},
            settings.login_max_failures,
            "Too many failed logins for this username from this address; wait before trying again.",
            "LOGIN_MAX_FAILURES",
        ),
        (
            {"address": address},
            settings.login_max_failures_per_address,
            "Too many failed logins from this address; wait before trying again.",
            "LOGIN_MAX_FAILURES_PER_ADDRESS",
        ),
    ]
    if user is None or address not in user.get("login_addresses", ()):
        limits.append(
            (
                {"username": username},
                settings.login_max_failures_per_user,
                "Too many failed logins for this username; wait before trying again.",
                "LOGIN_MAX_FAILURES_PER_USER",
            )
        )
    for query, limit, detail, setting in limits:
        retry_after = _seconds_until_within(failures, query, limit, window, now)
        if retry_after is not None:
            # A refused attempt reached no password check, so it is not a failure: an
            # attacker who keeps knocking does not keep the lock on (contract v1.1).
            failures.delete_one({"_id": attempt.inserted_id})
            raise Problem(429, "Too Many Requests", detail, headers={"Retry-After": str(retry_after)}, limit=setting)


# How many of the addresses a user last logged in from the per-username limit spares.
KNOWN_ADDRESSES = 5


@blueprint.post("/login")
def login():
    credentials = parse_body(Credentials)
    settings = current_app.config["SETTINGS"]
    db = database.db()
    sweep_expired()
    key = user_key(credentials.username)
    user = db.users.find_one({"_id": key})
    _record_attempt_or_refuse(key, user, settings)

    stored = user["password_hash"] if user else current_app.extensions["dummy_password_hash"]
    matches, rehashed = passwords.verify(stored, credentials.password, settings.scrypt_n)
    if not matches or user is None:
        raise unauthorized("Unknown username or wrong password.")
    if rehashed:  # an earlier format or cost: upgraded now that the password is known
        db.users.update_one({"_id": user["_id"]}, {"$set": {"password_hash": rehashed}})

    address = request.remote_addr
    db.login_failures.delete_many({"username": key, "address": address})
    known = [address] + [a for a in user.get("login_addresses", ()) if a != address][: KNOWN_ADDRESSES - 1]
    if known != user.get("login_addresses"):
        db.users.update_one({"_id": key}, {"$set": {"login_addresses": known}})
    username = user.get("username", user["_id"])
    token = secrets.token_urlsafe(32)
    issued = utcnow()
    expires_at = issued + timedelta(seconds=settings.token_ttl_seconds)
    db.tokens.insert_one(
        {"_id": token_digest(token), "username": username, "issued_at": issued, "expires_at": expires_at}
    )
    return jsonify(
        token=token,
        token_type="Bearer",
        username=username,
        expires_at=iso(expires_at),
        expires_in=settings.token_ttl_seconds,
    )


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
