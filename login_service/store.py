"""Users and tokens in MongoDB, the indexes of the login service's collections, the
migrations of earlier user layouts (both run by service_kit.migrate), and the sweep of
expired documents.

Layout (docs/architecture.md has the indexes):
- `users`: `_id` the username in lower case (names are unique without regard to case),
  `username` as registered, `skeleton` (login_service.lookalikes) under a unique index so
  that look-alike names are one name, `password_hash`, `created_at`, `login_addresses`.
- `tokens`: `_id` the SHA-256 of the token, `username`, `issued_at`, `expires_at`.
- `login_failures` and `registrations`: the login throttle's records (login_service.throttle).
- `schema_marks`: one document per one-time migration that has run on this database.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from flask import current_app
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from login_service import lookalikes
from service_kit import database
from service_kit.config import Settings
from service_kit.housekeeping import Every
from service_kit.timeutil import utcnow
from service_kit.token_cache import token_digest

# How many of the addresses a user last logged in from the store keeps (the per-username
# limit of login_service.throttle spares them).
KNOWN_ADDRESSES = 5


def migrate() -> None:
    """The secondary indexes (`create_index` is idempotent), then the migrations of earlier
    layouts, each a no-op once its mark is in `schema_marks`. Run by the migration command
    (service_kit.migrate), never by the service itself."""
    db = database.db()
    db.tokens.create_index([("expires_at", ASCENDING)])
    db.login_failures.create_index([("username", ASCENDING), ("at", ASCENDING)])
    db.login_failures.create_index([("address", ASCENDING), ("at", ASCENDING)])
    db.registrations.create_index([("address", ASCENDING), ("at", ASCENDING)])
    fold_usernames()
    index_skeletons()


# --- users ------------------------------------------------------------------------------


def user_key(username: str) -> str:
    """Usernames are unique without regard to case: a user's `_id` is the name in lower case
    (the pattern allows ASCII only), and `username` keeps the case it was registered with."""
    return username.lower()


class UsernameTaken(Exception):
    """A registration's name is taken: exactly (in some case), or by a look-alike name."""

    def __init__(self, looks_alike: bool):
        super().__init__()
        self.looks_alike = looks_alike


def add_user(username: str, password_hash: str, address: str | None) -> None:
    """Store a new user, or raise UsernameTaken."""
    record = {
        "_id": user_key(username),
        "username": username,
        # Unique (index_skeletons): of two registrations of look-alike names, however close
        # in time, one gets UsernameTaken.
        "skeleton": lookalikes.skeleton(username),
        "password_hash": password_hash,
        "created_at": utcnow(),
        # The address a user registered from is one they log in from: guesses from
        # elsewhere never lock them out of it, even before their first login.
        "login_addresses": [address],
    }
    users = database.db().users
    try:
        users.insert_one(record)
    except DuplicateKeyError:
        exists = users.find_one({"_id": record["_id"]}, {"_id": 1}) is not None
        raise UsernameTaken(looks_alike=not exists) from None


def find_user(username: str) -> dict | None:
    return database.db().users.find_one({"_id": user_key(username)})


def replace_password_hash(user: dict, password_hash: str) -> None:
    database.db().users.update_one({"_id": user["_id"]}, {"$set": {"password_hash": password_hash}})


def remember_login_address(user: dict, address: str | None) -> None:
    """Keep `address` first among the user's last KNOWN_ADDRESSES login addresses."""
    known = [address] + [a for a in user.get("login_addresses", ()) if a != address][: KNOWN_ADDRESSES - 1]
    if known != user.get("login_addresses"):
        database.db().users.update_one({"_id": user["_id"]}, {"$set": {"login_addresses": known}})


def username_of(user: dict) -> str:
    return user.get("username", user["_id"])


# --- tokens -----------------------------------------------------------------------------


def issue_token(username: str, ttl_seconds: int) -> tuple[str, datetime]:
    """A new opaque bearer token for `username` and its expiry. Only its digest is stored."""
    token = secrets.token_urlsafe(32)
    issued = utcnow()
    expires_at = issued + timedelta(seconds=ttl_seconds)
    database.db().tokens.insert_one(
        {"_id": token_digest(token), "username": username, "issued_at": issued, "expires_at": expires_at}
    )
    return token, expires_at


def find_live_token(token: str) -> dict | None:
    record = database.db().tokens.find_one({"_id": token_digest(token)})
    if record is None or record["expires_at"] <= utcnow():
        return None
    return record


def revoke_token(token: str) -> None:
    database.db().tokens.delete_one({"_id": token_digest(token)})


# --- housekeeping -----------------------------------------------------------------------


def _sweep_expired() -> None:
    """Drop expired tokens and old login failures and registrations. Expiry itself never
    waits for this: every check compares expires_at, since FerretDB has no TTL indexes."""
    settings: Settings = current_app.config["SETTINGS"]
    db = database.db()
    db.tokens.delete_many({"expires_at": {"$lte": utcnow()}})
    horizon = utcnow() - timedelta(seconds=settings.login_failure_window_seconds)
    db.login_failures.delete_many({"at": {"$lte": horizon}})
    registration_horizon = utcnow() - timedelta(seconds=settings.registration_window_seconds)
    db.registrations.delete_many({"at": {"$lte": registration_horizon}})


sweep_expired = Every(60, _sweep_expired)


# --- migrations of earlier layouts ------------------------------------------------------

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
        key = lookalikes.skeleton(username_of(user))
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
