"""HAProxy's statistics CSV (`show stat` on the runtime socket, or the stats page's `;csv`)
read by its own header, so no caller depends on a column's position.

Command line, for the shell scripts (standard library only, any python3, the checkout on PYTHONPATH):
    haproxy_cmd "show stat" | python3 -m scripts.lib.haproxy_stats PROXY FIELD...
prints FIELD... of every row of PROXY (its servers, then BACKEND or FRONTEND), tab-separated.
"""

from __future__ import annotations

import csv
import sys

AGGREGATES = ("BACKEND", "FRONTEND")


def parse(text: str) -> list[dict[str, str]]:
    """One dict per row, keyed by the header's names (pxname, svname, status, scur, ...)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    lines[0] = lines[0].removeprefix("# ")
    return list(csv.DictReader(lines))


def server_states(text: str, backend: str = "chat_servers") -> dict[str, str]:
    """Server name -> its status (UP, DOWN, MAINT, ...) for the servers of `backend`."""
    return {
        row["svname"]: row["status"]
        for row in parse(text)
        if row["pxname"] == backend and row["svname"] not in AGGREGATES
    }


def frontend_requests(text: str, frontend: str) -> int:
    """The HTTP requests `frontend` has received since HAProxy started (0 when unknown)."""
    for row in parse(text):
        if row["pxname"] == frontend and row["svname"] == "FRONTEND":
            return int(row["req_tot"] or 0)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python3 -m scripts.lib.haproxy_stats PROXY FIELD...  (show stat's CSV on stdin)", file=sys.stderr)
        return 2
    proxy, names = argv[0], argv[1:]
    for row in parse(sys.stdin.read()):
        if row["pxname"] == proxy:
            try:
                print("\t".join(row[name] for name in names))
            except KeyError as unknown:
                print(f"HAProxy's statistics have no field {unknown}", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
