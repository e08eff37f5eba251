"""gunicorn's gthread worker, with a stalled client's connection closed where it stalled.

A client that stops sending in the middle of a request is cut by the read timeout
(SO_RCVTIMEO, conf/gunicorn.conf.py). gunicorn then closes the connection gracefully, on
the worker's main thread: it half-closes, and waits up to 2 s for the client's own close,
one connection after another. A stalled client never closes, so 12 of them held one
worker's main loop (its accepts and its keep-alive connections) for 24 s, the last cut
connection closing 25 s after it stalled (tests/system/test_abuse.py).

Such a connection has nothing left to answer and nothing left to drain, so the worker
thread that met the timeout closes it at once; the main thread's graceful close then
finds it closed. Every other connection (an answered request, an error answer with bytes
still arriving) is closed by gunicorn as before. Imported by the master (gunicorn loads
the worker class there): it imports nothing but gunicorn.
"""

from __future__ import annotations

import select

from gunicorn import util
from gunicorn.workers import gthread


class ThreadWorker(gthread.ThreadWorker):
    def handle(self, conn: gthread.TConn) -> bool:
        keep = super().handle(conn)
        if keep is False and _stalled(conn):
            util.close(conn.sock)
        return keep


def _stalled(conn: gthread.TConn) -> bool:
    """The connection's latest request never arrived whole, and nothing is waiting to be
    read: its client stopped sending (or went away)."""
    parser = conn.parser
    if parser is None or conn.is_http2:
        return False
    request = getattr(parser, "mesg", None)  # an HTTP/1 parser's latest request, None at first
    if request is not None and getattr(request, "req_number", None) == getattr(parser, "req_count", None):
        return False  # the request was read whole (and answered, or refused)
    poll = select.poll()
    try:
        poll.register(conn.sock, select.POLLIN)
        return not poll.poll(0)
    except (OSError, ValueError):  # closed already
        return False
