"""What the chat store did in one run, read from the database after the run and before the
next reset: the seq allocator's count against the messages stored, and the insert attempts
the Idempotency-Key claims recorded. Written as store.json into the run's directory; the
report shows the figures per run and at each maximum (tools.loadtest.report.EXTRA_FIGURES)."""

from __future__ import annotations

import json
from pathlib import Path

FILE = "store.json"


def collect(uri: str) -> dict[str, float]:
    """Counts of the database the URI names. `extra_attempts_per_post`: every seq a claim
    recorded beyond its first (the earlier design listed each seq it tried; the allocator
    hands out exactly one). `seqs_per_message`: seqs handed out per message stored (1.0: no
    seq was wasted and none is missing). A message is a (room, seq) stored anywhere, counted
    once: a sweep stores a bucket before it removes those entries from the room's log, so a
    count made while a sweep is between the two (the run's last posts may still be at the
    servers) finds them in both places, as does a room moved from the earlier layouts."""
    import pymongo

    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        db = client.get_default_database()
        # Stored: in the rooms' logs, in buckets, and one document each (the earlier layouts).
        stored: set[tuple[str, int]] = set()
        for message in db.messages.find({}, {"_id": 1}):
            room, seq = message["_id"].rsplit("/", 1)
            stored.add((room, int(seq)))
        for bucket in db.message_buckets.find({}, {"first": 1, "entries": 1}):
            room = bucket["_id"].rsplit("/", 1)[0]
            stored.update((room, bucket["first"] + offset) for offset in range(len(bucket["entries"])))
        handed_out = 0
        for room in db.rooms.find({}, {"allocated": 1, "last_seq": 1, "log": 1, "log_base": 1}):
            handed_out += room.get("allocated", room.get("last_seq", 0))
            base = room.get("log_base", 1)
            stored.update((room["_id"], base + offset) for offset in range(len(room.get("log", []))))
        messages = len(stored)
        claims = tried = 0
        for claim in db.idempotency_keys.find({}, {"seqs": 1}):
            claims += 1
            tried += max(1, len(claim.get("seqs") or []))
    finally:
        client.close()
    return {
        "messages": messages,
        "seqs_handed_out": handed_out,
        "claims": claims,
        "extra_attempts_per_post": (tried - claims) / claims if claims else 0.0,
        "seqs_per_message": handed_out / messages if messages else 0.0,
    }


def write(uri: str, run_dir: Path) -> None:
    (run_dir / FILE).write_text(json.dumps(collect(uri), indent=2) + "\n")


def figure(name: str):
    """A reader of one figure of a run directory's store.json, for EXTRA_FIGURES."""

    def read(run_dir: Path) -> float | None:
        path = run_dir / FILE
        return json.loads(path.read_text()).get(name) if path.exists() else None

    return read
