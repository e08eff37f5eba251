"""Log lines as JSON, one object a line, from the app and from gunicorn alike, each line
about a request carrying that request's id; and the rotation of a log file for `make run`.

Imports neither Flask nor pymongo: gunicorn's master loads it (`logger_class` in
conf/gunicorn.conf.py) before a gevent worker patches the standard library.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from contextvars import ContextVar

from gunicorn import glogging
from pythonjsonlogger.json import JsonFormatter

# The id of the request being served by this thread or greenlet (greenlets have contexts
# of their own), set by the app's before_request hook (service_kit/app.py).
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# What an id from HAProxy (or a trusted proxy before it) may look like; anything else is
# replaced by one of ours, so a client cannot write arbitrary text into the logs.
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def accept_request_id(sent: str | None) -> str:
    """The request id to use: the one HAProxy sent when it is well formed, else a new one
    (a request that reached the service directly)."""
    if sent and _VALID_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        if current is not None and not hasattr(record, "request_id"):
            record.request_id = current
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the app's loggers (gunicorn puts stderr where its own log
    goes: a file under var/log, the journal, or a container's output). Once per process."""
    root = logging.getLogger()
    if any(getattr(handler, "_chatsys", False) for handler in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    handler.addFilter(_RequestIdFilter())
    handler._chatsys = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


class JsonLogger(glogging.Logger):
    """Gunicorn's own log lines (workers booting, timeouts) as JSON too. Its optional access
    log (GUNICORN_ACCESS_LOG) keeps its own format: the app writes a JSON line per request."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(json_formatter())
            handler.addFilter(_RequestIdFilter())


def rotate_when_large(path: str, max_bytes: int, keep: int, every_seconds: float = 5.0) -> threading.Thread:
    """In gunicorn's master: every few seconds, when the log file is over `max_bytes`, move
    it to path.1 (path.1 to path.2 ..., `keep` old files) and send the master SIGUSR1, on
    which gunicorn reopens its log files in the master and every worker (the way logrotate
    works with it). Several processes write to the file, so no one of them may rename it
    alone: the master owns the rotation."""

    def rotate() -> None:
        for number in range(keep - 1, 0, -1):
            if os.path.exists(f"{path}.{number}"):
                os.replace(f"{path}.{number}", f"{path}.{number + 1}")
        os.replace(path, f"{path}.1")
        os.kill(os.getpid(), signal.SIGUSR1)

    def watch() -> None:
        while True:
            time.sleep(every_seconds)
            try:
                if os.path.getsize(path) > max_bytes:
                    rotate()
            except OSError:
                continue  # moved or removed by someone else: gunicorn writes on regardless

    thread = threading.Thread(target=watch, name="log-rotation", daemon=True)
    thread.start()
    return thread
