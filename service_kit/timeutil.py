"""Timestamps as the contract writes them: ISO 8601, UTC, millisecond precision, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    # BSON dates keep milliseconds; truncating here makes stored and returned values equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
