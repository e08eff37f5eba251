"""Per-process cache of validated tokens, bounded in size and in time.

An entry is honoured until min(expires_at, validated_at + TOKEN_CACHE_SECONDS), so an
expired token is refused at once and a logged-out one within the cache bound. Tokens the
login service refused are remembered for the same bound, so a flood of one bad token does
not become a flood of calls; tokens are never stored, only their SHA-256.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedIdentity:
    username: str | None  # None: the login service refused this token
    honoured_until: float  # wall-clock seconds


class TokenCache:
    def __init__(self, max_entries: int, max_age_seconds: float, clock=time.time):
        self._entries: OrderedDict[str, CachedIdentity] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._max_age = max_age_seconds
        self._clock = clock

    def get(self, digest: str) -> CachedIdentity | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry.honoured_until <= now:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry

    def put(self, digest: str, username: str | None, expires_at: float | None) -> None:
        if self._max_entries <= 0 or self._max_age <= 0:
            return
        honoured_until = self._clock() + self._max_age
        if expires_at is not None:
            honoured_until = min(honoured_until, expires_at)
        with self._lock:
            self._entries[digest] = CachedIdentity(username, honoured_until)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
