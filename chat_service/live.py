"""Long-poll waits: one watcher per room and process asks the database for the room's next
messages a few times a second and wakes every request of this process that waits on it.

The database sees one query per poll interval per watched room and process, however many
followers wait. Nothing outlives a wake-up: the watcher keeps the newest seq it has seen,
and the page it read last so that the requests it wakes answer from that one read instead
of each reading the same messages again. A request whose position the page does not
reach reads from the database itself, so every answer is a contiguous run after its
`after`, as without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask, current_app

from chat_service import store
from service_kit import metrics
from service_kit.problems import unavailable

# How many messages one poll reads at most; a longer burst is read by the requests.
POLL_PAGE = 200

# Long polls that find messages at once, and so do a plain read's work at once: at most
# this many per process. HAProxy routes every long poll past the plain reads' queue
# (chat_waits, not chat_servers, in conf/haproxy/haproxy.cfg), whose maxconn bounds those
# to 8 per server; this is the same bound for the reads that come in as long polls.
IMMEDIATE_READS = 8
# How long such a read waits for its turn before a 503, as HAProxy's queue timeout.
IMMEDIATE_READ_QUEUE_SECONDS = 5
_immediate_reads = threading.BoundedSemaphore(IMMEDIATE_READS)

_watchers: dict[str, RoomWatcher] = {}
_watchers_lock = threading.Lock()
# Set when the process is told to stop: every wait ends at once with an empty page, so the
# followers ask again, through HAProxy, of a server that is not going away.
_stopping = threading.Event()


def stop_waiting() -> None:
    """End every wait of this process now (called on SIGTERM, see conf/gunicorn.conf.py)."""
    _stopping.set()
    with _watchers_lock:
        watchers = list(_watchers.values())
    for watcher in watchers:
        with watcher.changed:
            watcher.changed.notify_all()


class RoomWatcher:
    """Polls one room for messages after the newest it has seen, while anyone waits."""

    def __init__(self, app: Flask, room: str, newest: int, poll_seconds: float):
        self.app = app
        self.room = room
        self.poll_seconds = poll_seconds
        self.changed = threading.Condition()
        self.newest = newest  # a seq known to be stored (or the waiters' position)
        self.page: list[dict] = []  # the run the last poll found, newest + 1 ... at that time
        self.polls = 0
        self.failed_poll = -1  # the last poll that could not reach the database
        self.waiters = 0

    def run(self) -> None:
        with self.app.app_context():
            while True:
                with _watchers_lock, self.changed:  # the order wait_for_messages takes them in
                    if not self.waiters:
                        del _watchers[self.room]
                        metrics.ROOM_WATCHERS.dec()
                        return
                self._poll()
                time.sleep(self.poll_seconds)

    def _poll(self) -> None:
        try:
            page = store.read_after(self.room, self.newest, POLL_PAGE)
            failed = False
        except Exception:  # the database is down or slow: the waiters learn it at once
            current_app.logger.warning("room watcher for %r could not reach the database", self.room)
            page, failed = [], True
        metrics.WATCHER_POLLS.labels("failed" if failed else "ok").inc()
        with self.changed:
            self.polls += 1
            if failed:
                self.failed_poll = self.polls
            if page:
                self.page = page
                self.newest = store.seq_of(page[-1])
            if failed or page:
                self.changed.notify_all()

    def wait(self, after: int, limit: int, seconds: float, client_gone: Callable[[], bool]) -> list[dict]:
        """Messages after `after`, once any exist, or [] after `seconds`."""
        deadline = time.monotonic() + seconds
        with self.changed:
            started = self.polls
            while self.newest <= after:
                if self.failed_poll > started:
                    raise unavailable("The database is not answering; try again shortly.")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or _stopping.is_set() or client_gone():
                    return []
                # Wake at least once a second to notice a client that went away.
                self.changed.wait(min(remaining, 1.0))
            page = self.page
        if page and store.seq_of(page[0]) <= after + 1 <= store.seq_of(page[-1]):
            return page[after + 1 - store.seq_of(page[0]) :][:limit]
        with immediate_read():
            return store.read_after(self.room, after, limit)


@contextmanager
def immediate_read() -> Iterator[None]:
    """A turn among the IMMEDIATE_READS of this process, or 503 when none comes in time."""
    if not _immediate_reads.acquire(timeout=IMMEDIATE_READ_QUEUE_SECONDS):
        raise unavailable("Too many reads at once; try again shortly.")
    try:
        yield
    finally:
        _immediate_reads.release()


def is_watched(room: str) -> bool:
    """True while a watcher of this process polls the room (so the room exists)."""
    with _watchers_lock:
        return room in _watchers


def wait_for_messages(
    room: str, after: int, limit: int, seconds: float, client_gone: Callable[[], bool], known: int = 0
) -> list[dict]:
    """Hold the request until the room has messages after `after` (any chat server may
    store them) or `seconds` pass. `known` is a seq known to be stored, where a new
    watcher starts looking for the newest."""
    watcher = _join_watcher(room, known)
    metrics.LONG_POLLS_WAITING.inc()
    try:
        return watcher.wait(after, limit, seconds, client_gone)
    finally:
        metrics.LONG_POLLS_WAITING.dec()
        with watcher.changed:
            watcher.waiters -= 1


def _join_watcher(room: str, known: int) -> RoomWatcher:
    """The room's watcher with one more waiter, started if there was none."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    while True:
        with _watchers_lock:
            watcher = _watchers.get(room)
            if watcher is not None:
                with watcher.changed:
                    watcher.waiters += 1
                return watcher
        # Watch from the room's newest message, which a follower's `after` may be ahead of.
        fresh = RoomWatcher(app, room, store.newest_seq(room, known=known), app.config["SETTINGS"].wait_poll_seconds)
        fresh.waiters = 1
        with _watchers_lock:
            if room in _watchers:
                continue  # another request started one meanwhile: join that one
            _watchers[room] = fresh
        metrics.ROOM_WATCHERS.inc()
        threading.Thread(target=fresh.run, name=f"watch-{room}", daemon=True).start()
        return fresh
