"""Routes of the profile service, as in the service contract."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from flask import Blueprint, Flask, g, jsonify
from pydantic import AfterValidator, model_validator
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from service_kit import database, names
from service_kit.auth import LoginServiceClient, require_user
from service_kit.problems import Problem
from service_kit.timeutil import iso, utcnow
from service_kit.validation import StrictBody, parse_body, text_checks

blueprint = Blueprint("profile", __name__)

_USERNAME = re.compile(names.USERNAME)


def _http_url(value: str) -> str:
    if value == "":
        return value  # clears the avatar back to its default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("must be an http or https URL")
    return value


DisplayName = Annotated[str, *text_checks(min_length=1, max_length=64)]
Bio = Annotated[str, *text_checks(max_length=500)]
AvatarUrl = Annotated[str, *text_checks(max_length=500), AfterValidator(_http_url)]


class ProfileUpdate(StrictBody):
    display_name: DisplayName | None = None
    bio: Bio | None = None
    avatar_url: AvatarUrl | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls_and_not_empty(cls, body):
        if isinstance(body, dict):
            if not body:
                raise ValueError("give at least one of display_name, bio, avatar_url")
            nulls = [name for name, value in body.items() if value is None]
            if nulls:
                raise ValueError(f"null is not a value for {', '.join(nulls)}")
        return body


def setup(app: Flask) -> None:
    app.extensions["token_check"] = LoginServiceClient(app.config["SETTINGS"])


def _public(profile: dict) -> dict:
    return {
        "username": profile["_id"],
        "display_name": profile["display_name"],
        "bio": profile["bio"],
        "avatar_url": profile["avatar_url"],
        "updated_at": iso(profile["updated_at"]),
    }


def _not_found(username: str) -> Problem:
    return Problem(404, "Not Found", f"No profile for {username!r}.", kind="profile-not-found")


@blueprint.get("/profiles/<username>")
@require_user
def read_profile(username: str):
    if not _USERNAME.fullmatch(username):
        raise _not_found(username)
    profile = database.db().profiles.find_one({"_id": username})
    if profile is None:
        raise _not_found(username)
    return jsonify(_public(profile))


@blueprint.put("/profiles/<username>")
@require_user
def write_profile(username: str):
    if g.username != username:
        raise Problem(403, "Forbidden", "You may only edit your own profile.")
    update = parse_body(ProfileUpdate).model_dump(exclude_unset=True)
    defaults = {"display_name": username, "bio": "", "avatar_url": ""}
    for name in update:
        defaults.pop(name)
    changes = {"$set": {**update, "updated_at": utcnow()}}
    if defaults:
        changes["$setOnInsert"] = defaults
    profiles = database.db().profiles
    for attempt in range(2):
        try:
            profile = profiles.find_one_and_update(
                {"_id": username}, changes, upsert=True, return_document=ReturnDocument.AFTER
            )
            break
        except DuplicateKeyError:
            # Two first PUTs at once: one upsert inserts, the other must update instead.
            if attempt:
                raise
    assert profile is not None, "an upsert returning the document after it returns one"
    return jsonify(_public(profile))
