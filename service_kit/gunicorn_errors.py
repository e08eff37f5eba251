"""Gunicorn's own error answers (request line or headers too large, malformed requests)
as problem+json with X-Instance, like every other answer of the services."""

from __future__ import annotations

import json

from gunicorn import util

from service_kit.problems import PROBLEM_TYPE_BASE


def install(instance: str) -> None:
    """Replace gunicorn's HTML error page; called from conf/gunicorn.conf.py."""

    def write_problem(sock, status_int, reason, mesg):
        body = json.dumps(
            {
                "type": PROBLEM_TYPE_BASE + reason.lower().replace(" ", "-"),
                "title": reason,
                "status": int(status_int),
                "detail": str(mesg),
            }
        ).encode("utf-8")
        head = (
            f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
            f"X-Instance: {instance}\r\n\r\n"
        ).encode("latin-1")
        util.write_nonblock(sock, head + body)

    util.write_error = write_problem
