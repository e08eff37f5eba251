"""Chores a process does now and then on the request path, at most once per interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Every:
    """Runs `chore` when called, unless it ran in this process less than `seconds` ago."""

    def __init__(self, seconds: float, chore: Callable[[], None]):
        self._seconds = seconds
        self._chore = chore
        self._lock = threading.Lock()
        self._last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._seconds:
                return
            self._last = now
        self._chore()
