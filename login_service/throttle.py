"""The login throttle: bounds on login attempts (per username and address, per address,
per username) and on registrations per address, counted in the database so that they
hold across login instances (docs/architecture.md, "Login throttling").

Each attempt or registration is a document of its own (`login_failures`,
`registrations`) because inserts are atomic on every backend, where a counter's
read-modify-write is not (FerretDB applies `$inc` outside a transaction). Old documents
go in the store's sweep (login_service.store.sweep_expired).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import request
from pymongo import ASCENDING
from pymongo.collection import Collection

from service_kit import database
from service_kit.config import Settings
from service_kit.problems import Problem
from service_kit.timeutil import utcnow


def refuse_if_registering_too_often(settings: Settings) -> None:
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


def _seconds_until_within(
    failures: Collection, query: dict, limit: int, window: timedelta, now: datetime
) -> int | None:
    """None while at most `limit` attempts match `query` in the window; else the seconds
    until enough of them are older than the window."""
    query = {**query, "at": {"$gt": now - window}}
    count = failures.count_documents(query)
    if limit <= 0 or count <= limit:
        return None
    oldest_counted = next(failures.find(query, {"at": 1}).sort("at", ASCENDING).skip(count - limit - 1).limit(1))
    return max(1, int((oldest_counted["at"] + window - now).total_seconds()) + 1)


def record_attempt_or_refuse(username: str, user: dict | None, settings: Settings) -> None:
    """Every login attempt is recorded before its password is checked, then the recent
    attempts are counted (its own included), so however many arrive at once, no more than
    the limits reach the password check. Three limits, none of which an attacker elsewhere
    can turn against a user:
    - per username and client address (LOGIN_MAX_FAILURES, 5): guessing from one place;
    - per client address (LOGIN_MAX_FAILURES_PER_ADDRESS, 100): any usernames, such as
      unknown ones, which cost a full scrypt each too;
    - per username (LOGIN_MAX_FAILURES_PER_USER, 50): guessing from many addresses. It
      spares the addresses the user last logged in from, so the user keeps logging in.
    `username` is the user's key (login_service.store.user_key)."""
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


def forget_attempts(username: str, address: str | None) -> None:
    """A successful login clears the attempts of its username (the user's key) from its address."""
    database.db().login_failures.delete_many({"username": username, "address": address})
