"""Declared request validation: a pydantic model per body, one path to a 400 problem."""

from __future__ import annotations

import json
import re
from typing import TypeVar, overload

from flask import request
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from service_kit.problems import Problem, bad_request

Model = TypeVar("Model", bound="StrictBody")


def _refuse_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def text_checks(
    min_length: int = 0, max_length: int | None = None, pattern: str | None = None, rule: str = ""
) -> tuple[object, ...]:
    """The checks of a string field, for a module-level alias mypy sees as a type:
    `Username = Annotated[str, *text_checks(pattern=..., rule=...)]`. Strict (no coercion
    from numbers, objects or null), lengths in code points, free of NUL (which the database
    cannot store reliably), and, with `pattern`, checked against it with `rule` as the
    message a client reads."""
    checks: list[object] = [
        StringConstraints(min_length=min_length or None, max_length=max_length),
        AfterValidator(_refuse_nul),
    ]
    if pattern is not None:
        compiled = re.compile(pattern)

        def _match(value: str) -> str:
            if not compiled.fullmatch(value):
                raise ValueError(f"must be {rule}")
            return value

        checks.append(AfterValidator(_match))
    return tuple(checks)


class StrictBody(BaseModel):
    """Base of every request body: strict types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=False)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object whose key repeats is refused: parsers disagree on which value wins, so a
    check by one reader and a use by another could see different values."""
    body = {}
    for key, value in pairs:
        if key in body:
            raise _DuplicateKey(key)
        body[key] = value
    return body


def read_json_object() -> dict:
    """The request body as a JSON object, or the contract's 415/400 problem."""
    if request.mimetype != "application/json":
        raise Problem(415, "Unsupported Media Type", "Send the body as application/json.")
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit without an error (Werkzeug's LimitedStream);
        # one more byte on the wire means it was over the limit.
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    try:
        body = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_refuse_duplicate_keys
        )
    except _DuplicateKey as error:
        raise bad_request(f"The body names the key {error.args[0]!r} more than once.") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise bad_request(f"The body is not valid UTF-8 JSON: {error}") from None
    except RecursionError:
        raise bad_request("The body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.")
    return body


def _describe(errors: list) -> list[dict]:
    described = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ())) or "body"
        message = error.get("msg", "invalid").removeprefix("Value error, ")
        described.append({"field": location, "message": message})
    return described


def parse_body(model: type[Model]) -> Model:
    """Validate the JSON body against `model`; every failure is a 400 naming the fields."""
    body = read_json_object()
    try:
        return model.model_validate(body)
    except ValidationError as error:
        errors = _describe(error.errors(include_url=False, include_input=False))
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise bad_request(f"Invalid body: {summary}", errors) from None


@overload
def query_int(name: str, *, minimum: int, maximum: int | None = None, default: int) -> int: ...


@overload
def query_int(name: str, *, minimum: int, maximum: int | None = None, default: None = None) -> int | None: ...


def query_int(name: str, *, minimum: int, maximum: int | None = None, default: int | None = None) -> int | None:
    """An integer query parameter checked against its range; nothing is silently clamped."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise bad_request(f"Query parameter {name!r} must be a whole number.")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise bad_request(f"Query parameter {name!r} must be {minimum}{upper}.")
    return value
